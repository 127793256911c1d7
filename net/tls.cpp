#include "net/tls.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>

// Sections: helpers (error text, files, PEM); TlsServerContext; TlsClientContext; TlsStream.

namespace tally::net {
namespace {

// A PEM file larger than this is not a certificate chain or a key: refused before parsing.
constexpr size_t kPemFileBytesMax = 1u << 20;
// What one SSL_read can return: a TLS record's plaintext is at most 16 KiB.
constexpr size_t kRecordPlaintextBytesMax = 16u << 10;
// TLS 1.2 only (TLS 1.3's suites are all AEAD with forward secrecy, and OpenSSL's default list of
// them stands): ECDHE key exchange and AEAD ciphers, nothing else.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
struct CtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using CtxPtr = std::unique_ptr<SSL_CTX, CtxFree>;

// Never a passphrase prompt on the terminal: an encrypted key is an error to report instead.
int no_passphrase(char*, int, int, void*) {
  return -1;
}

std::string with_reason(std::string what) {
  std::string why = tls_error_text();
  if (!why.empty()) what += " (" + why + ")";
  return what;
}

bool read_file(const std::string& path, std::string* text, std::string* error) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    *error = "cannot read " + path + ": " + std::strerror(errno);
    return false;
  }
  text->assign(kPemFileBytesMax + 1, '\0');
  size_t n = std::fread(text->data(), 1, text->size(), f);
  bool bad = std::ferror(f) != 0;
  int e = errno;
  std::fclose(f);
  if (bad) {
    *error = "cannot read " + path + ": " + std::strerror(e);
    return false;
  }
  if (n > kPemFileBytesMax) {
    *error = path + ": larger than " + std::to_string(kPemFileBytesMax) + " bytes: not a PEM file";
    return false;
  }
  text->resize(n);
  return true;
}

BioPtr memory_bio(std::string_view text) {
  if (text.size() > INT_MAX) return nullptr;
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// True when the last PEM read failed only because no further PEM block follows.
bool pem_ended() {
  unsigned long e = ERR_peek_last_error();
  if (ERR_GET_LIB(e) != ERR_LIB_PEM || ERR_GET_REASON(e) != PEM_R_NO_START_LINE) return false;
  ERR_clear_error();
  return true;
}

// What servers and clients share: TLS 1.2 at least (1.3 is preferred by both ends when both
// have it, which OpenSSL does by itself), no renegotiation, no compression, no tickets.
bool configure(SSL_CTX* ctx, std::string* error) {
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) != 1) {
    *error = with_reason("cannot configure TLS");
    return false;
  }
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_NO_TICKET);
  // Idle connections hold no read/write buffers: thousands of them stay cheap.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  return true;
}

}  // namespace

std::string tls_error_text() {
  std::string out;
  const char* data = nullptr;
  int flags = 0;
  while (unsigned long e = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) {
    if (!out.empty()) out += "; ";
    const char* reason = ERR_reason_error_string(e);
    if (reason != nullptr) {
      const char* lib = ERR_lib_error_string(e);
      if (lib != nullptr) out += std::string(lib) + ": ";
      out += reason;
    } else {
      char buf[256];
      ERR_error_string_n(e, buf, sizeof buf);
      out += buf;
    }
    if ((flags & ERR_TXT_STRING) != 0 && data != nullptr && *data != '\0')
      out += std::string(" [") + data + "]";
  }
  return out;
}

// ---- TlsServerContext ---------------------------------------------------------------------------

TlsServerContext::~TlsServerContext() {
  SSL_CTX_free(ctx_);
}

std::shared_ptr<TlsServerContext> TlsServerContext::from_files(const std::string& cert_chain_file,
                                                               const std::string& key_file,
                                                               std::string* error, Input* culprit) {
  Input ignored;
  if (culprit == nullptr) culprit = &ignored;
  *culprit = Input::kNone;
  std::string cert, key;
  if (!read_file(cert_chain_file, &cert, error)) {
    *culprit = Input::kCertificate;
    return nullptr;
  }
  if (!read_file(key_file, &key, error)) {
    *culprit = Input::kPrivateKey;
    return nullptr;
  }
  std::shared_ptr<TlsServerContext> ctx =
      from_pem(cert, key, error, culprit, cert_chain_file, key_file);
  OPENSSL_cleanse(key.data(), key.size());  // the key's text does not outlive its use
  return ctx;
}

std::shared_ptr<TlsServerContext> TlsServerContext::from_pem(std::string_view cert_chain_pem,
                                                             std::string_view key_pem,
                                                             std::string* error, Input* culprit,
                                                             std::string_view cert_name,
                                                             std::string_view key_name) {
  Input ignored;
  if (culprit == nullptr) culprit = &ignored;
  *culprit = Input::kNone;
  ERR_clear_error();
  CtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) {
    *error = with_reason("cannot make a TLS context");
    return nullptr;
  }
  if (!configure(ctx.get(), error)) return nullptr;
  SSL_CTX_set_options(ctx.get(), SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx.get(), 0);

  std::string cn(cert_name), kn(key_name);
  auto cert_error = [&](const std::string& what) {
    *error = with_reason(cn + ": " + what);
    *culprit = Input::kCertificate;
    return nullptr;
  };
  BioPtr cert_bio = memory_bio(cert_chain_pem);
  if (!cert_bio) return cert_error("too large");
  X509Ptr leaf(PEM_read_bio_X509_AUX(cert_bio.get(), nullptr, no_passphrase, nullptr));
  if (!leaf) return cert_error("no PEM certificate in it");
  if (SSL_CTX_use_certificate(ctx.get(), leaf.get()) != 1)
    return cert_error("the certificate cannot be used");
  // The rest of the chain, if any, is sent after the leaf.
  for (;;) {
    X509Ptr ca(PEM_read_bio_X509(cert_bio.get(), nullptr, no_passphrase, nullptr));
    if (!ca) {
      if (pem_ended()) break;
      return cert_error("a malformed certificate after the first");
    }
    if (SSL_CTX_add0_chain_cert(ctx.get(), ca.get()) != 1)
      return cert_error("a chain certificate cannot be used");
    (void)ca.release();  // add0: the context owns it now
  }

  auto key_error = [&](const std::string& what) {
    *error = with_reason(kn + ": " + what);
    *culprit = Input::kPrivateKey;
    return nullptr;
  };
  BioPtr key_bio = memory_bio(key_pem);
  if (!key_bio) return key_error("too large");
  PkeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, no_passphrase, nullptr));
  if (!key) return key_error("no usable private key in it (PEM, not encrypted)");
  ERR_clear_error();
  if (X509_check_private_key(leaf.get(), key.get()) != 1)
    return key_error("is not the private key of the certificate in " + cn);
  if (SSL_CTX_use_PrivateKey(ctx.get(), key.get()) != 1 ||
      SSL_CTX_check_private_key(ctx.get()) != 1)
    return key_error("the key cannot be used with the certificate in " + cn);
  return std::shared_ptr<TlsServerContext>(new TlsServerContext(ctx.release()));
}

// ---- TlsClientContext ---------------------------------------------------------------------------

TlsClientContext::~TlsClientContext() {
  SSL_CTX_free(ctx_);
}

std::shared_ptr<TlsClientContext> TlsClientContext::create(const TlsClientOptions& o,
                                                           std::string* error) {
  ERR_clear_error();
  CtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) {
    *error = with_reason("cannot make a TLS context");
    return nullptr;
  }
  if (!configure(ctx.get(), error)) return nullptr;
  if (!o.verify) {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
    return std::shared_ptr<TlsClientContext>(new TlsClientContext(ctx.release(), o.server_name));
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  auto add_cas = [&](std::string_view pem, const std::string& name) -> bool {
    BioPtr bio = memory_bio(pem);
    X509_STORE* store = SSL_CTX_get_cert_store(ctx.get());
    int added = 0;
    while (bio) {
      X509Ptr ca(PEM_read_bio_X509(bio.get(), nullptr, no_passphrase, nullptr));
      if (!ca) {
        if (pem_ended()) break;
        *error = with_reason(name + ": a malformed certificate");
        return false;
      }
      if (X509_STORE_add_cert(store, ca.get()) != 1) {
        *error = with_reason(name + ": the certificate cannot be trusted");
        return false;
      }
      ++added;
    }
    if (added == 0) {
      *error = name + ": no PEM certificate in it";
      return false;
    }
    return true;
  };
  if (!o.ca_file.empty()) {
    std::string text;
    if (!read_file(o.ca_file, &text, error) || !add_cas(text, o.ca_file)) return nullptr;
  }
  if (!o.ca_pem.empty() && !add_cas(o.ca_pem, "the CA certificates given")) return nullptr;
  if (o.ca_file.empty() && o.ca_pem.empty() && SSL_CTX_set_default_verify_paths(ctx.get()) != 1) {
    *error = with_reason("cannot load the system's trusted CA certificates");
    return nullptr;
  }
  return std::shared_ptr<TlsClientContext>(new TlsClientContext(ctx.release(), o.server_name));
}

// ---- TlsStream ----------------------------------------------------------------------------------

TlsStream::~TlsStream() {
  SSL_free(ssl_);
}

std::unique_ptr<TlsStream> TlsStream::make(SSL_CTX* ctx, bool server, std::string* error) {
  ERR_clear_error();
  SSL* ssl = SSL_new(ctx);
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  if (ssl == nullptr || in == nullptr || out == nullptr) {
    *error = with_reason("cannot make a TLS connection");
    BIO_free(in);
    BIO_free(out);
    SSL_free(ssl);
    return nullptr;
  }
  // An empty memory BIO says "retry", not "end of stream": the socket's end is the owner's news.
  SSL_set_bio(ssl, in, out);
  if (server) {
    SSL_set_accept_state(ssl);
  } else {
    SSL_set_connect_state(ssl);
  }
  return std::unique_ptr<TlsStream>(new TlsStream(ssl));
}

std::unique_ptr<TlsStream> TlsStream::server(const TlsServerContext& ctx, std::string* error) {
  return make(ctx.native(), true, error);
}

std::unique_ptr<TlsStream> TlsStream::client(const TlsClientContext& ctx, std::string* error) {
  std::unique_ptr<TlsStream> s = make(ctx.native(), false, error);
  if (!s) return nullptr;
  const std::string& name = ctx.server_name();
  if (!name.empty()) {
    in6_addr ip;
    bool is_ip =
        inet_pton(AF_INET, name.c_str(), &ip) == 1 || inet_pton(AF_INET6, name.c_str(), &ip) == 1;
    // An address is matched against the certificate's IP SANs, and is never sent as SNI (RFC
    // 6066 allows only DNS names there); a DNS name is both.
    bool ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl_), name.c_str()) == 1
                    : SSL_set_tlsext_host_name(s->ssl_, name.c_str()) == 1 &&
                          SSL_set1_host(s->ssl_, name.c_str()) == 1;
    if (!ok) {
      *error = with_reason("cannot use '" + name + "' as the server's name");
      return nullptr;
    }
    SSL_set_hostflags(s->ssl_, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  }
  if (!s->advance()) {  // writes the ClientHello
    *error = s->error();
    return nullptr;
  }
  return s;
}

bool TlsStream::fail(int ssl_error, std::string_view during) {
  failed_ = true;
  std::string why = tls_error_text();
  long verify = SSL_get_verify_result(ssl_);
  if ((SSL_get_verify_mode(ssl_) & SSL_VERIFY_PEER) != 0 && !SSL_is_server(ssl_) &&
      verify != X509_V_OK) {
    why = std::string("the server's certificate was refused: ") +
          X509_verify_cert_error_string(verify) + (why.empty() ? "" : " (" + why + ")");
  } else if (why.empty()) {
    why = ssl_error == SSL_ERROR_SYSCALL ? "the stream ended unexpectedly"
                                         : "OpenSSL error " + std::to_string(ssl_error);
  }
  error_ = std::string(during) + ": " + why;
  return false;
}

bool TlsStream::advance() {
  if (failed_) return false;
  if (!handshake_done_) {
    ERR_clear_error();
    int r = SSL_do_handshake(ssl_);
    if (r != 1) {
      int e = SSL_get_error(ssl_, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return true;
      return fail(e, "TLS handshake");
    }
    handshake_done_ = true;
  }
  return flush_pending();
}

bool TlsStream::flush_pending() {
  if (pending_.empty()) return true;
  std::vector<uint8_t> p;
  p.swap(pending_);
  return write_plaintext(p);
}

bool TlsStream::feed_ciphertext(std::span<const uint8_t> bytes) {
  if (failed_) return false;
  BIO* in = SSL_get_rbio(ssl_);
  while (!bytes.empty()) {
    int n = static_cast<int>(std::min<size_t>(bytes.size(), INT_MAX));
    int w = BIO_write(in, bytes.data(), n);
    if (w <= 0) return fail(SSL_ERROR_SSL, "TLS input");
    bytes = bytes.subspan(static_cast<size_t>(w));
  }
  return advance();
}

bool TlsStream::read_plaintext(std::vector<uint8_t>* out) {
  if (failed_) return false;
  if (!handshake_done_) return true;
  uint8_t buf[kRecordPlaintextBytesMax];
  for (;;) {
    size_t n = 0;
    ERR_clear_error();
    int r = SSL_read_ex(ssl_, buf, sizeof buf, &n);
    if (r == 1) {
      out->insert(out->end(), buf, buf + n);
      continue;
    }
    int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return true;
    if (e == SSL_ERROR_ZERO_RETURN) {
      peer_closed_ = true;
      return true;
    }
    return fail(e, "TLS read");
  }
}

bool TlsStream::write_plaintext(std::span<const uint8_t> bytes) {
  if (failed_) return false;
  if (!handshake_done_) {
    pending_.insert(pending_.end(), bytes.begin(), bytes.end());
    return true;
  }
  // Memory BIOs grow as needed, so a write is never short and never waits for the peer.
  while (!bytes.empty()) {
    size_t n = 0;
    ERR_clear_error();
    int r = SSL_write_ex(ssl_, bytes.data(), bytes.size(), &n);
    if (r != 1) return fail(SSL_get_error(ssl_, r), "TLS write");
    bytes = bytes.subspan(n);
  }
  return true;
}

size_t TlsStream::take_ciphertext(std::vector<uint8_t>* out) {
  BIO* w = SSL_get_wbio(ssl_);
  size_t n = BIO_ctrl_pending(w);
  if (n == 0) return 0;
  size_t old = out->size();
  out->resize(old + n);
  int r = BIO_read(w, out->data() + old, static_cast<int>(std::min<size_t>(n, INT_MAX)));
  size_t got = r > 0 ? static_cast<size_t>(r) : 0;
  out->resize(old + got);
  return got;
}

std::string_view TlsStream::protocol() const {
  return handshake_done_ ? std::string_view(SSL_get_version(ssl_)) : std::string_view();
}

}  // namespace tally::net
