// Tally net: SCRAM-SHA-256 (RFC 5802, RFC 7677), how a TCP client proves it holds a key's secret.
//
// The server stores only a Verifier per key: enough to check a client's proof and to prove itself
// to the client, not enough to log in, and the secret cannot be recovered from it except by
// guessing (each guess costs `iterations` rounds of PBKDF2). The secret never crosses the wire.
// One login is four messages: client-first, server-first, client-final, server-final. The server
// side is ServerExchange and the client side ClientExchange, one object per login attempt. No
// channel binding (no -PLUS variant): run it inside TLS if the link needs protecting.
//
// SASLprep (RFC 4013) is not implemented. Secrets and user names are used as the raw bytes they
// are, so two spellings of the same Unicode text would be two different secrets. Keep both to
// printable ASCII (0x21-0x7E, is_printable_ascii()): the server refuses other user names, and
// whoever writes secrets into the config should refuse other secrets. make_verifier itself takes
// any bytes, so that it matches clients that do not follow this rule either.
//
// Ownership: everything here is a plain value. An exchange copies what it needs from the caller's
// Verifier during server_first(), so the Verifier need not outlive that call. Exchanges wipe the
// secret and derived keys they hold (OPENSSL_cleanse) when destroyed; they cannot be copied or
// moved, so no stray copy escapes the wipe.
//
// Thread safety: the free functions may be called from any thread at once. An exchange belongs to
// one connection and must not be used by two threads at once.
//
// Errors are values: fallible calls return std::nullopt (or false) and the exchange keeps an Error
// saying why. After any failure an exchange is finished: every later call fails with kOutOfStep,
// so one nonce never gets a second guess.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace tally::net::scram {

// PBKDF2 rounds for new verifiers. The trade-off: each doubling doubles what an attacker holding
// a stolen verifier pays per guess of the secret, and what the client pays per login (about 1 ms at
// 4096 on one current core). The server pays nothing either way: it never runs PBKDF2 during an
// exchange, only a few hashes, so more rounds cannot be turned into a load on it. 4096 is RFC
// 7677's minimum. Raise it for secrets a person chose, which are guessable; random secrets of 128
// bits or more gain nothing from more rounds.
constexpr uint32_t kIterationsDefault = 4096;
// Accepted range, both in verifiers and in what a server may ask of a client. The upper bound
// stops a hostile or misconfigured server from making the client spin for minutes.
constexpr uint32_t kIterationsMin = 4096;
constexpr uint32_t kIterationsMax = 10'000'000;

constexpr size_t kSaltBytes = 16;     // salt of new verifiers (and of fake ones for unknown users)
constexpr size_t kSaltBytesMax = 64;  // longest salt accepted from a verifier or a server
constexpr size_t kKeyBytes = 32;      // SHA-256 output: StoredKey, ServerKey, proofs, signatures

// Input bounds. Every message over kMessageBytesMax is refused before it is parsed, so a peer
// cannot make either side allocate or hash much.
constexpr size_t kMessageBytesMax = 4096;
constexpr size_t kUserBytesMax = 256;   // user name, unescaped
constexpr size_t kNonceBytesMax = 256;  // the client's nonce (the server adds 24 characters)
constexpr size_t kSecretBytesMax = 1024;
constexpr size_t kVerifierTextBytesMax = 256;  // longest encode_verifier() output is 201
// The server secret that fake salts are derived from: shorter keys could be guessed, and then
// anyone could compute the fake salt of a name and tell unknown users from known ones.
constexpr size_t kFakeSaltKeyBytesMin = 16;

// What the server stores per key: the secret cannot be recovered from it, nor used to log in.
// It is still sensitive: with it, anyone can pose as the server to clients and test guesses of the
// secret offline; and with it plus one recorded exchange of the same key, log in (the recorded
// proof XOR HMAC(StoredKey, AuthMessage) is the ClientKey). TLS is what keeps exchanges unrecorded.
struct Verifier {
  std::string salt;  // raw bytes
  uint32_t iterations = 0;
  std::array<uint8_t, kKeyBytes> stored_key{};  // H(HMAC(SaltedPassword, "Client Key"))
  std::array<uint8_t, kKeyBytes> server_key{};  // HMAC(SaltedPassword, "Server Key")
};

// Derives the verifier of `secret`. nullopt if the secret is empty or over kSecretBytesMax, the
// salt is empty or over kSaltBytesMax, iterations lie outside [kIterationsMin, kIterationsMax], or
// OpenSSL fails.
[[nodiscard]] std::optional<Verifier> make_verifier(std::string_view secret, std::string_view salt,
                                                    uint32_t iterations);
// As above with kSaltBytes fresh random bytes (RAND_bytes) and kIterationsDefault.
[[nodiscard]] std::optional<Verifier> make_verifier(std::string_view secret);

// Text form for config files, PostgreSQL's (so its tooling can produce verifiers):
// "SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>".
std::string encode_verifier(const Verifier& v);
// nullopt on any malformed input: another prefix, iterations out of range or not canonical
// decimal, bad base64, an empty or oversized salt, keys that are not kKeyBytes, trailing text.
[[nodiscard]] std::optional<Verifier> parse_verifier(std::string_view text);

// Standard base64 (RFC 4648 section 4) with padding. Decoding is strict so that each byte string
// has exactly one text form: length a multiple of 4, no whitespace, '=' only as final padding,
// and the unused bits before the padding zero.
std::string base64_encode(std::span<const uint8_t> bytes);
std::string base64_encode(std::string_view bytes);
[[nodiscard]] std::optional<std::string> base64_decode(std::string_view text);

// True if `text` is non-empty and every byte is in 0x21-0x7E (see SASLprep above).
[[nodiscard]] bool is_printable_ascii(std::string_view text);

enum class Error : uint8_t {
  kNone,
  kOutOfStep,                  // called out of order, again, or after a failure
  kTooLong,                    // a message over kMessageBytesMax
  kMalformed,                  // not RFC 5802's grammar, or bad base64
  kInvalidUserName,            // empty, over kUserBytesMax, bad "=2C"/"=3D" escape, unprintable
  kChannelBindingUnsupported,  // client-first flag "y" or "p=...": only "n" is served
  kExtensionUnsupported,       // authzid, "m=", or attributes beyond those required
  kChannelBindingMismatch,     // client-final c= is not "biws" (base64 of "n,,")
  kNonceMismatch,              // client-final nonce is not the combined one; or server's nonce
                               // does not extend the client's
  kInvalidProof,               // wrong secret, or unknown user (deliberately the same)
  kIterationsOutOfRange,       // server asked for iterations outside the accepted range
  kServerRefused,              // server sent "e=..."
  kServerSignatureMismatch,    // server-final v= is wrong: the server does not know the verifier
  kInvalidArgument,            // the caller's own input: a bad Verifier, short fake-salt key, ...
  kCrypto,                     // RAND_bytes or another OpenSSL call failed
};
std::string_view error_name(Error e);

// Server side of one exchange. Steps: client-first -> server-first -> client-final.
class ServerExchange {
 public:
  ServerExchange() = default;
  ~ServerExchange();
  ServerExchange(const ServerExchange&) = delete;
  ServerExchange& operator=(const ServerExchange&) = delete;

  // Parses the client-first-message ("n,,n=<user>,r=<nonce>"). On success returns the user name
  // (unescaped "=2C" "=3D") so the caller can look up its Verifier. Refuses channel binding flags
  // other than "n", an authzid, extensions (m= and any attribute after r=), an empty, unprintable
  // or oversized nonce, and malformed text.
  [[nodiscard]] std::optional<std::string> client_first(std::string_view msg);

  // Returns server-first "r=<cnonce+snonce>,s=<salt b64>,i=<iter>" for the user's verifier, or,
  // given none (unknown user), one of the same form whose salt is derived from the user name and
  // `fake_salt_key` (HMAC-SHA-256), so that it is stable across logins like a real salt and
  // unknown users cannot be told from wrong secrets; the exchange then fails at client_final()
  // with kInvalidProof after the same work as a wrong secret. `fake_salt_key` must be a server
  // secret of at least kFakeSaltKeyBytesMin bytes that stays the same across restarts (checked on
  // every call, known user or not, so a missing key shows up at once). `fake_iterations` should be
  // what real verifiers use, or the count would give unknown users away.
  [[nodiscard]] std::optional<std::string> server_first(
      const Verifier* v, std::string_view fake_salt_key,
      uint32_t fake_iterations = kIterationsDefault);

  // Verifies client-final "c=biws,r=<nonce>,p=<proof b64>": channel binding must be "biws" (n,,),
  // nonce must equal the combined nonce, proof must verify (constant time: CRYPTO_memcmp). On
  // success returns the server-final message "v=<ServerSignature b64>" and the client is
  // authenticated as the user client_first() returned.
  [[nodiscard]] std::optional<std::string> client_final(std::string_view msg);

  bool authenticated() const { return step_ == Step::kDone; }
  Error error() const { return error_; }
  // The RFC 5802 server-error to send after a failure ("e=invalid-proof", ...). It never says
  // whether the user exists.
  std::string server_error() const;

  // Test hook: fix the server's part of the nonce instead of drawing it from RAND_bytes.
  void set_nonce_for_test(std::string nonce) { test_nonce_ = std::move(nonce); }

 private:
  enum class Step : uint8_t { kClientFirst, kServerFirst, kClientFinal, kDone, kFailed };
  std::nullopt_t fail(Error e);

  Step step_ = Step::kClientFirst;
  Error error_ = Error::kNone;
  std::string user_;
  std::string client_nonce_;
  std::string nonce_;  // client's + server's
  std::string client_first_bare_;
  std::string server_first_;
  std::string test_nonce_;
  bool user_known_ = false;
  std::array<uint8_t, kKeyBytes> stored_key_{};
  std::array<uint8_t, kKeyBytes> server_key_{};
};

// Client side of one exchange. Steps: client-first -> server-first -> server-final.
class ClientExchange {
 public:
  ClientExchange(std::string user, std::string secret);
  ~ClientExchange();
  ClientExchange(const ClientExchange&) = delete;
  ClientExchange& operator=(const ClientExchange&) = delete;

  // "n,,n=<escaped user>,r=<nonce>". nullopt if the user name would be refused by the server
  // (kInvalidUserName) or RAND_bytes fails.
  [[nodiscard]] std::optional<std::string> client_first();
  // Returns client-final. Refuses a nonce not starting with ours (or adding nothing to it),
  // iterations outside [kIterationsMin, kIterationsMax], bad base64, "m=" and other extensions,
  // and a secret that is empty or over kSecretBytesMax (kInvalidArgument). Runs PBKDF2: up to
  // kIterationsMax rounds, i.e. seconds.
  [[nodiscard]] std::optional<std::string> server_first(std::string_view msg);
  // Checks v= (constant time). False on "e=...", a mismatch, or malformed text. Only when this
  // returns true has the server shown it knows the verifier.
  [[nodiscard]] bool server_final(std::string_view msg);

  Error error() const { return error_; }

  // Test hook: fix the client nonce instead of drawing it from RAND_bytes.
  void set_nonce_for_test(std::string nonce) { test_nonce_ = std::move(nonce); }

 private:
  enum class Step : uint8_t { kClientFirst, kServerFirst, kServerFinal, kDone, kFailed };
  std::nullopt_t fail(Error e);

  Step step_ = Step::kClientFirst;
  Error error_ = Error::kNone;
  std::string user_;
  std::string secret_;
  std::string nonce_;
  std::string client_first_bare_;
  std::string test_nonce_;
  std::array<uint8_t, kKeyBytes> server_signature_{};  // what server-final must carry
};

}  // namespace tally::net::scram
