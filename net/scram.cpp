#include "net/scram.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <charconv>
#include <climits>
#include <vector>

namespace tally::net::scram {
namespace {

using Key = std::array<uint8_t, kKeyBytes>;

constexpr std::string_view kVerifierPrefix = "SCRAM-SHA-256$";
// c= of every client-final we accept: base64 of the gs2 header "n,,", which carries no binding
// data. Anything else means the client thinks it negotiated something we do not do.
constexpr std::string_view kChannelBindingNone = "biws";
constexpr size_t kNonceRandomBytes = 18;  // 144 bits; 24 base64 characters, never a comma
// Domain separation: the fake-salt key might one day key other HMACs too.
constexpr std::string_view kFakeSaltLabel = "tally scram fake salt\n";

static_assert(kVerifierPrefix.size() + 8 + 1 + (kSaltBytesMax + 2) / 3 * 4 + 1 +
                      2 * ((kKeyBytes + 2) / 3 * 4) + 1 <=
                  kVerifierTextBytesMax,
              "the longest verifier must parse");
static_assert(kIterationsMax < 100'000'000, "parse_iterations reads at most 8 digits");
static_assert(kSecretBytesMax <= INT_MAX && kSaltBytesMax <= INT_MAX);
static_assert(kSaltBytes <= kKeyBytes, "fake salts are cut from one HMAC output");

std::span<const uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string_view as_chars(std::span<const uint8_t> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

[[nodiscard]] bool hmac_sha256(std::span<const uint8_t> key, std::string_view data, Key* out) {
  unsigned int len = 0;
  if (key.size() > INT_MAX) return false;
  const unsigned char* r =
      HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), out->data(), &len);
  return r != nullptr && len == kKeyBytes;
}

[[nodiscard]] bool sha256(std::span<const uint8_t> data, Key* out) {
  unsigned int len = 0;
  return EVP_Digest(data.data(), data.size(), out->data(), &len, EVP_sha256(), nullptr) == 1 &&
         len == kKeyBytes;
}

Key xor_keys(const Key& a, const Key& b) {
  Key r;
  for (size_t i = 0; i < kKeyBytes; ++i) r[i] = a[i] ^ b[i];
  return r;
}

bool keys_equal(std::span<const uint8_t> a, const Key& b) {
  return a.size() == kKeyBytes && CRYPTO_memcmp(a.data(), b.data(), kKeyBytes) == 0;
}

template <typename T>
void wipe(T& bytes) {
  OPENSSL_cleanse(bytes.data(), bytes.size());
}

struct Keys {
  Key client_key{};
  Key stored_key{};
  Key server_key{};
  ~Keys() {
    wipe(client_key);
    wipe(stored_key);
    wipe(server_key);
  }
};

bool secret_ok(std::string_view secret) {
  return !secret.empty() && secret.size() <= kSecretBytesMax;
}
bool salt_ok(std::string_view salt) {
  return !salt.empty() && salt.size() <= kSaltBytesMax;
}
bool iterations_ok(uint32_t i) {
  return i >= kIterationsMin && i <= kIterationsMax;
}

// RFC 5802 section 3: SaltedPassword, ClientKey, StoredKey, ServerKey. The caller has bounded the
// secret and salt, so the int casts below are exact.
[[nodiscard]] bool derive_keys(std::string_view secret, std::string_view salt, uint32_t iterations,
                               Keys* out) {
  Key salted{};
  bool ok = PKCS5_PBKDF2_HMAC(secret.data(), static_cast<int>(secret.size()),
                              reinterpret_cast<const unsigned char*>(salt.data()),
                              static_cast<int>(salt.size()), static_cast<int>(iterations),
                              EVP_sha256(), static_cast<int>(kKeyBytes), salted.data()) == 1;
  ok = ok && hmac_sha256(salted, "Client Key", &out->client_key) &&
       sha256(out->client_key, &out->stored_key) &&
       hmac_sha256(salted, "Server Key", &out->server_key);
  wipe(salted);
  return ok;
}

// A nonce as RFC 5802 defines it: printable ASCII except ','.
bool nonce_chars_ok(std::string_view nonce) {
  if (nonce.empty()) return false;
  for (char c : nonce) {
    if (c < 0x21 || c > 0x7e || c == ',') return false;
  }
  return true;
}

[[nodiscard]] std::optional<std::string> random_nonce() {
  std::array<uint8_t, kNonceRandomBytes> raw{};
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) return std::nullopt;
  return base64_encode(raw);
}

// Fields between commas. Messages are bounded, so so is this.
std::vector<std::string_view> split_fields(std::string_view msg) {
  std::vector<std::string_view> fields;
  size_t start = 0;
  while (true) {
    const size_t comma = msg.find(',', start);
    if (comma == std::string_view::npos) {
      fields.push_back(msg.substr(start));
      return fields;
    }
    fields.push_back(msg.substr(start, comma - start));
    start = comma + 1;
  }
}

// The value of attribute `name` ("x=value"), if `field` is that attribute.
std::optional<std::string_view> attr(std::string_view field, char name) {
  if (field.size() < 2 || field[0] != name || field[1] != '=') return std::nullopt;
  return field.substr(2);
}

// Canonical decimal only (no sign, no leading zero), so a verifier has one text form.
std::optional<uint32_t> parse_iterations(std::string_view text) {
  if (text.empty() || text.size() > 8 || text[0] == '0') return std::nullopt;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  uint32_t v = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
  return v;
}

// RFC 5802 saslname: ',' and '=' travel as "=2C" and "=3D".
std::string escape_user(std::string_view user) {
  std::string out;
  out.reserve(user.size());
  for (char c : user) {
    if (c == ',') {
      out += "=2C";
    } else if (c == '=') {
      out += "=3D";
    } else {
      out += c;
    }
  }
  return out;
}

std::optional<std::string> unescape_user(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '=') {
      out += text[i];
      continue;
    }
    const std::string_view code = text.substr(i + 1, 2);
    if (code == "2C") {
      out += ',';
    } else if (code == "3D") {
      out += '=';
    } else {
      return std::nullopt;
    }
    i += 2;
  }
  return out;
}

bool user_ok(std::string_view user) {
  return user.size() <= kUserBytesMax && is_printable_ascii(user);
}

bool verifier_ok(const Verifier& v) {
  return salt_ok(v.salt) && iterations_ok(v.iterations);
}

constexpr std::string_view kBase64Alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace

std::string base64_encode(std::span<const uint8_t> bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t n = uint32_t{bytes[i]} << 16 | uint32_t{bytes[i + 1]} << 8 | bytes[i + 2];
    out += kBase64Alphabet[n >> 18];
    out += kBase64Alphabet[(n >> 12) & 63];
    out += kBase64Alphabet[(n >> 6) & 63];
    out += kBase64Alphabet[n & 63];
  }
  const size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t n = uint32_t{bytes[i]} << 16;
    if (rest == 2) n |= uint32_t{bytes[i + 1]} << 8;
    out += kBase64Alphabet[n >> 18];
    out += kBase64Alphabet[(n >> 12) & 63];
    out += rest == 2 ? kBase64Alphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string base64_encode(std::string_view bytes) {
  return base64_encode(as_bytes(bytes));
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    uint32_t n = 0;
    int pad = 0;
    for (size_t j = 0; j < 4; ++j) {
      const char c = text[i + j];
      if (c == '=' && last && j >= 2) {
        ++pad;
        n <<= 6;
        continue;
      }
      const int v = base64_value(c);
      if (v < 0 || pad > 0) return std::nullopt;  // not base64, or data after padding
      n = n << 6 | static_cast<uint32_t>(v);
    }
    // Padding hides the low bits of the last character; non-zero there would be a second text
    // form of the same bytes.
    if ((pad == 1 && (n & 0xff) != 0) || (pad == 2 && (n & 0xffff) != 0)) return std::nullopt;
    out += static_cast<char>(n >> 16);
    if (pad < 2) out += static_cast<char>((n >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(n & 0xff);
  }
  return out;
}

bool is_printable_ascii(std::string_view text) {
  if (text.empty()) return false;
  for (char c : text) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

std::optional<Verifier> make_verifier(std::string_view secret, std::string_view salt,
                                      uint32_t iterations) {
  if (!secret_ok(secret) || !salt_ok(salt) || !iterations_ok(iterations)) return std::nullopt;
  Keys keys;
  if (!derive_keys(secret, salt, iterations, &keys)) return std::nullopt;
  Verifier v;
  v.salt = std::string(salt);
  v.iterations = iterations;
  v.stored_key = keys.stored_key;
  v.server_key = keys.server_key;
  return v;
}

std::optional<Verifier> make_verifier(std::string_view secret) {
  std::array<uint8_t, kSaltBytes> salt{};
  if (RAND_bytes(salt.data(), static_cast<int>(salt.size())) != 1) return std::nullopt;
  return make_verifier(secret, as_chars(salt), kIterationsDefault);
}

std::string encode_verifier(const Verifier& v) {
  std::string out(kVerifierPrefix);
  out += std::to_string(v.iterations);
  out += ':';
  out += base64_encode(v.salt);
  out += '$';
  out += base64_encode(v.stored_key);
  out += ':';
  out += base64_encode(v.server_key);
  return out;
}

std::optional<Verifier> parse_verifier(std::string_view text) {
  if (text.size() > kVerifierTextBytesMax || !text.starts_with(kVerifierPrefix)) {
    return std::nullopt;
  }
  text.remove_prefix(kVerifierPrefix.size());
  // <iterations>:<salt>$<stored>:<server>, no other separators anywhere (base64 has none).
  const size_t colon1 = text.find(':');
  const size_t dollar = text.find('$');
  if (colon1 == std::string_view::npos || dollar == std::string_view::npos || dollar < colon1) {
    return std::nullopt;
  }
  const size_t colon2 = text.find(':', dollar);
  if (colon2 == std::string_view::npos) return std::nullopt;
  const std::string_view iter_text = text.substr(0, colon1);
  const std::string_view salt_text = text.substr(colon1 + 1, dollar - colon1 - 1);
  const std::string_view stored_text = text.substr(dollar + 1, colon2 - dollar - 1);
  const std::string_view server_text = text.substr(colon2 + 1);

  const std::optional<uint32_t> iterations = parse_iterations(iter_text);
  if (!iterations || !iterations_ok(*iterations)) return std::nullopt;
  std::optional<std::string> salt = base64_decode(salt_text);
  if (!salt || !salt_ok(*salt)) return std::nullopt;
  const std::optional<std::string> stored = base64_decode(stored_text);
  const std::optional<std::string> server = base64_decode(server_text);
  if (!stored || stored->size() != kKeyBytes || !server || server->size() != kKeyBytes) {
    return std::nullopt;
  }
  Verifier v;
  v.salt = std::move(*salt);
  v.iterations = *iterations;
  for (size_t i = 0; i < kKeyBytes; ++i) {
    v.stored_key[i] = static_cast<uint8_t>((*stored)[i]);
    v.server_key[i] = static_cast<uint8_t>((*server)[i]);
  }
  return v;
}

std::string_view error_name(Error e) {
  switch (e) {
    case Error::kNone:
      return "none";
    case Error::kOutOfStep:
      return "out of step";
    case Error::kTooLong:
      return "message too long";
    case Error::kMalformed:
      return "malformed message";
    case Error::kInvalidUserName:
      return "invalid user name";
    case Error::kChannelBindingUnsupported:
      return "channel binding not supported";
    case Error::kExtensionUnsupported:
      return "extension not supported";
    case Error::kChannelBindingMismatch:
      return "channel binding mismatch";
    case Error::kNonceMismatch:
      return "nonce mismatch";
    case Error::kInvalidProof:
      return "invalid proof";
    case Error::kIterationsOutOfRange:
      return "iterations out of range";
    case Error::kServerRefused:
      return "server refused";
    case Error::kServerSignatureMismatch:
      return "server signature mismatch";
    case Error::kInvalidArgument:
      return "invalid argument";
    case Error::kCrypto:
      return "crypto failure";
  }
  return "unknown";
}

// ---- ServerExchange ----

ServerExchange::~ServerExchange() {
  wipe(stored_key_);
  wipe(server_key_);
}

std::nullopt_t ServerExchange::fail(Error e) {
  step_ = Step::kFailed;
  // The first cause is the one worth reporting; a later kOutOfStep would hide it.
  if (error_ == Error::kNone) error_ = e;
  return std::nullopt;
}

std::optional<std::string> ServerExchange::client_first(std::string_view msg) {
  if (step_ != Step::kClientFirst) return fail(Error::kOutOfStep);
  if (msg.size() > kMessageBytesMax) return fail(Error::kTooLong);
  const std::vector<std::string_view> f = split_fields(msg);
  if (f.size() < 2) return fail(Error::kMalformed);
  // gs2-header: cbind flag, authzid.
  if (f[0] == "y" || attr(f[0], 'p')) return fail(Error::kChannelBindingUnsupported);
  if (f[0] != "n") return fail(Error::kMalformed);
  if (!f[1].empty()) {
    return fail(attr(f[1], 'a') ? Error::kExtensionUnsupported : Error::kMalformed);
  }
  if (f.size() >= 3 && attr(f[2], 'm')) return fail(Error::kExtensionUnsupported);
  if (f.size() < 4) return fail(Error::kMalformed);
  const std::optional<std::string_view> name = attr(f[2], 'n');
  const std::optional<std::string_view> nonce = attr(f[3], 'r');
  if (!name || !nonce) return fail(Error::kMalformed);
  if (f.size() > 4) return fail(Error::kExtensionUnsupported);
  std::optional<std::string> user = unescape_user(*name);
  if (!user || !user_ok(*user)) return fail(Error::kInvalidUserName);
  if (nonce->size() > kNonceBytesMax || !nonce_chars_ok(*nonce)) return fail(Error::kMalformed);

  client_first_bare_ = std::string(msg.substr(f[0].size() + f[1].size() + 2));
  client_nonce_ = std::string(*nonce);
  user_ = *user;
  step_ = Step::kServerFirst;
  return user;
}

std::optional<std::string> ServerExchange::server_first(const Verifier* v,
                                                        std::string_view fake_salt_key,
                                                        uint32_t fake_iterations) {
  if (step_ != Step::kServerFirst) return fail(Error::kOutOfStep);
  if (fake_salt_key.size() < kFakeSaltKeyBytesMin || !iterations_ok(fake_iterations) ||
      (v != nullptr && !verifier_ok(*v))) {
    return fail(Error::kInvalidArgument);
  }
  std::string server_nonce;
  if (!test_nonce_.empty()) {
    if (test_nonce_.size() > kNonceBytesMax || !nonce_chars_ok(test_nonce_)) {
      return fail(Error::kInvalidArgument);
    }
    server_nonce = test_nonce_;
  } else {
    std::optional<std::string> random = random_nonce();
    if (!random) return fail(Error::kCrypto);
    server_nonce = std::move(*random);
  }
  nonce_ = client_nonce_ + server_nonce;

  std::string salt;
  uint32_t iterations = 0;
  if (v != nullptr) {
    user_known_ = true;
    salt = v->salt;
    iterations = v->iterations;
    stored_key_ = v->stored_key;
    server_key_ = v->server_key;
  } else {
    // The keys stay zero: client_final() still runs every step on them, then fails.
    user_known_ = false;
    Key fake{};
    std::string input(kFakeSaltLabel);
    input += user_;
    if (!hmac_sha256(as_bytes(fake_salt_key), input, &fake)) return fail(Error::kCrypto);
    salt = std::string(as_chars(std::span(fake).first(kSaltBytes)));
    iterations = fake_iterations;
  }
  server_first_ = "r=" + nonce_ + ",s=" + base64_encode(salt) + ",i=" + std::to_string(iterations);
  step_ = Step::kClientFinal;
  return server_first_;
}

std::optional<std::string> ServerExchange::client_final(std::string_view msg) {
  if (step_ != Step::kClientFinal) return fail(Error::kOutOfStep);
  if (msg.size() > kMessageBytesMax) return fail(Error::kTooLong);
  const std::vector<std::string_view> f = split_fields(msg);
  if (f.size() < 3) return fail(Error::kMalformed);
  const std::optional<std::string_view> binding = attr(f[0], 'c');
  const std::optional<std::string_view> nonce = attr(f[1], 'r');
  const std::optional<std::string_view> proof_text = attr(f.back(), 'p');
  if (!binding || !nonce || !proof_text) return fail(Error::kMalformed);
  if (f.size() > 3) return fail(Error::kExtensionUnsupported);
  if (*binding != kChannelBindingNone) return fail(Error::kChannelBindingMismatch);
  if (*nonce != nonce_) return fail(Error::kNonceMismatch);
  const std::optional<std::string> proof = base64_decode(*proof_text);
  if (!proof || proof->size() != kKeyBytes) return fail(Error::kMalformed);

  const std::string_view without_proof = msg.substr(0, msg.size() - f.back().size() - 1);
  std::string auth_message = client_first_bare_;
  auth_message += ',';
  auth_message += server_first_;
  auth_message += ',';
  auth_message += without_proof;

  // ClientKey = proof XOR HMAC(StoredKey, AuthMessage); the proof holds iff H(ClientKey) is
  // StoredKey. The server signature is computed whatever the outcome, so that a wrong secret, an
  // unknown user and a success take the same time up to the final branch.
  Key proof_key{};
  for (size_t i = 0; i < kKeyBytes; ++i) proof_key[i] = static_cast<uint8_t>((*proof)[i]);
  Key client_signature{};
  Key server_signature{};
  if (!hmac_sha256(stored_key_, auth_message, &client_signature) ||
      !hmac_sha256(server_key_, auth_message, &server_signature)) {
    return fail(Error::kCrypto);
  }
  Key client_key = xor_keys(proof_key, client_signature);
  Key check{};
  const bool hashed = sha256(client_key, &check);
  wipe(client_key);
  if (!hashed) return fail(Error::kCrypto);
  const bool match = keys_equal(check, stored_key_);
  if (!match || !user_known_) return fail(Error::kInvalidProof);
  step_ = Step::kDone;
  return "v=" + base64_encode(server_signature);
}

std::string ServerExchange::server_error() const {
  // RFC 5802 section 7 server-error-value.
  switch (error_) {
    case Error::kTooLong:
    case Error::kMalformed:
      return "e=invalid-encoding";
    case Error::kInvalidUserName:
      return "e=invalid-username-encoding";
    case Error::kChannelBindingUnsupported:
      return "e=channel-binding-not-supported";
    case Error::kExtensionUnsupported:
      return "e=extensions-not-supported";
    case Error::kChannelBindingMismatch:
      return "e=channel-bindings-dont-match";
    case Error::kInvalidProof:
      return "e=invalid-proof";
    default:
      return "e=other-error";
  }
}

// ---- ClientExchange ----

ClientExchange::ClientExchange(std::string user, std::string secret)
    : user_(std::move(user)), secret_(std::move(secret)) {}

ClientExchange::~ClientExchange() {
  wipe(secret_);
  wipe(server_signature_);
}

std::nullopt_t ClientExchange::fail(Error e) {
  step_ = Step::kFailed;
  if (error_ == Error::kNone) error_ = e;
  return std::nullopt;
}

std::optional<std::string> ClientExchange::client_first() {
  if (step_ != Step::kClientFirst) return fail(Error::kOutOfStep);
  if (!user_ok(user_)) return fail(Error::kInvalidUserName);
  if (!test_nonce_.empty()) {
    if (test_nonce_.size() > kNonceBytesMax || !nonce_chars_ok(test_nonce_)) {
      return fail(Error::kInvalidArgument);
    }
    nonce_ = test_nonce_;
  } else {
    std::optional<std::string> random = random_nonce();
    if (!random) return fail(Error::kCrypto);
    nonce_ = std::move(*random);
  }
  client_first_bare_ = "n=" + escape_user(user_) + ",r=" + nonce_;
  step_ = Step::kServerFirst;
  return "n,," + client_first_bare_;
}

std::optional<std::string> ClientExchange::server_first(std::string_view msg) {
  if (step_ != Step::kServerFirst) return fail(Error::kOutOfStep);
  if (msg.size() > kMessageBytesMax) return fail(Error::kTooLong);
  const std::vector<std::string_view> f = split_fields(msg);
  if (attr(f[0], 'e')) return fail(Error::kServerRefused);
  if (attr(f[0], 'm')) return fail(Error::kExtensionUnsupported);
  if (f.size() < 3) return fail(Error::kMalformed);
  const std::optional<std::string_view> nonce = attr(f[0], 'r');
  const std::optional<std::string_view> salt_text = attr(f[1], 's');
  const std::optional<std::string_view> iter_text = attr(f[2], 'i');
  if (!nonce || !salt_text || !iter_text) return fail(Error::kMalformed);
  if (f.size() > 3) return fail(Error::kExtensionUnsupported);
  // The server must keep our nonce (so this reply is to our request, not a replay) and add its
  // own (so our proof is for a fresh AuthMessage, not one an eavesdropper saw).
  if (!nonce->starts_with(nonce_) || nonce->size() == nonce_.size() || !nonce_chars_ok(*nonce)) {
    return fail(Error::kNonceMismatch);
  }
  const std::optional<std::string> salt = base64_decode(*salt_text);
  if (!salt || !salt_ok(*salt)) return fail(Error::kMalformed);
  const std::optional<uint32_t> iterations = parse_iterations(*iter_text);
  if (!iterations) return fail(Error::kMalformed);
  if (!iterations_ok(*iterations)) return fail(Error::kIterationsOutOfRange);
  if (!secret_ok(secret_)) return fail(Error::kInvalidArgument);

  Keys keys;
  if (!derive_keys(secret_, *salt, *iterations, &keys)) return fail(Error::kCrypto);
  std::string without_proof = "c=";
  without_proof += kChannelBindingNone;
  without_proof += ",r=";
  without_proof += *nonce;
  std::string auth_message = client_first_bare_;
  auth_message += ',';
  auth_message += msg;
  auth_message += ',';
  auth_message += without_proof;
  Key client_signature{};
  if (!hmac_sha256(keys.stored_key, auth_message, &client_signature) ||
      !hmac_sha256(keys.server_key, auth_message, &server_signature_)) {
    return fail(Error::kCrypto);
  }
  const Key proof = xor_keys(keys.client_key, client_signature);
  step_ = Step::kServerFinal;
  return without_proof + ",p=" + base64_encode(proof);
}

bool ClientExchange::server_final(std::string_view msg) {
  const auto refuse = [this](Error e) {
    fail(e);
    return false;
  };
  if (step_ != Step::kServerFinal) return refuse(Error::kOutOfStep);
  if (msg.size() > kMessageBytesMax) return refuse(Error::kTooLong);
  if (attr(msg, 'e')) return refuse(Error::kServerRefused);
  const std::optional<std::string_view> v = attr(msg, 'v');
  if (!v) return refuse(Error::kMalformed);
  if (v->find(',') != std::string_view::npos) return refuse(Error::kExtensionUnsupported);
  const std::optional<std::string> signature = base64_decode(*v);
  if (!signature) return refuse(Error::kMalformed);
  if (!keys_equal(as_bytes(*signature), server_signature_)) {
    return refuse(Error::kServerSignatureMismatch);
  }
  step_ = Step::kDone;
  return true;
}

}  // namespace tally::net::scram
