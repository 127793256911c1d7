// Tally net: optional TLS (1.2 minimum, 1.3 preferred) on OpenSSL 3, for the server and the client,
// without sockets: a TlsStream turns ciphertext from the peer into plaintext and plaintext into
// ciphertext for the peer, through two memory BIOs. Whoever owns the socket moves the bytes, so
// both server back ends (net/backend.h) and the client's poll loop get TLS with no change to their
// I/O, and the Tally frames inside are exactly the frames of a plain connection.
//
//   auto ctx = TlsServerContext::from_files("server.pem", "server.key", &why);   // once
//   auto tls = TlsStream::server(*ctx, &why);                                    // per connection
//   tls->feed_ciphertext(received);  tls->read_plaintext(&plain);  // plaintext for the FrameReader
//   tls->write_plaintext(frame);     tls->take_ciphertext(&out);   // ciphertext for the socket
//
// Ownership: a context owns its SSL_CTX; a stream holds its own reference to it (OpenSSL counts
// them), so a context may be dropped while its streams live. Threads: a context is immutable once
// made and may be shared by every thread; a stream belongs to one thread at a time. Errors are
// values: nullptr plus a sentence, or failed() plus error(), with OpenSSL's own reason in it.
// No OpenSSL header is included here.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct ssl_st;
struct ssl_ctx_st;

namespace tally::net {

// The server's certificate chain and private key. Session tickets and renegotiation are off
// (nothing here resumes sessions, and each is one more thing to get wrong); TLS 1.2 is limited to
// ECDHE with AEAD ciphers.
class TlsServerContext {
 public:
  // Which input a loading error is about (so that a configuration error can point at it).
  enum class Input : uint8_t { kNone, kCertificate, kPrivateKey };

  // PEM files: the leaf certificate first, then any intermediates; an unencrypted private key.
  // The errors name the file that is unreadable, malformed or does not match.
  static std::shared_ptr<TlsServerContext> from_files(const std::string& cert_chain_file,
                                                      const std::string& key_file,
                                                      std::string* error, Input* culprit = nullptr);
  // The same from PEM text; `cert_name` and `key_name` are what the errors call them.
  static std::shared_ptr<TlsServerContext> from_pem(std::string_view cert_chain_pem,
                                                    std::string_view key_pem, std::string* error,
                                                    Input* culprit = nullptr,
                                                    std::string_view cert_name = "the certificate",
                                                    std::string_view key_name = "the private key");
  ~TlsServerContext();
  TlsServerContext(const TlsServerContext&) = delete;
  TlsServerContext& operator=(const TlsServerContext&) = delete;

  ssl_ctx_st* native() const { return ctx_; }

 private:
  explicit TlsServerContext(ssl_ctx_st* ctx) : ctx_(ctx) {}
  ssl_ctx_st* ctx_;
};

struct TlsClientOptions {
  // Trusted CAs, PEM: a file, text, or both. Neither: the system's default trust store.
  std::string ca_file;
  std::string ca_pem;
  // The name the server's certificate must carry (a DNS name, or an IP address matched against
  // the certificate's IP SANs) and, when a DNS name, the SNI sent. Empty: no name check, only the
  // chain (the client library always fills it in: see ClientOptions::tls_server_name).
  std::string server_name;
  // Off only for tests of the server side: a client that does not verify can be impersonated.
  bool verify = true;
};

// What a client trusts and whom it expects.
class TlsClientContext {
 public:
  static std::shared_ptr<TlsClientContext> create(const TlsClientOptions& options,
                                                  std::string* error);
  ~TlsClientContext();
  TlsClientContext(const TlsClientContext&) = delete;
  TlsClientContext& operator=(const TlsClientContext&) = delete;

  ssl_ctx_st* native() const { return ctx_; }
  const std::string& server_name() const { return server_name_; }

 private:
  TlsClientContext(ssl_ctx_st* ctx, std::string server_name)
      : ctx_(ctx), server_name_(std::move(server_name)) {}
  ssl_ctx_st* ctx_;
  std::string server_name_;
};

// One connection's TLS state. Every call makes what progress it can and never blocks: when the
// handshake needs the peer's next flight, the calls simply produce no plaintext yet. After any
// call, take_ciphertext() has whatever must go to the peer (handshake records, alerts, encrypted
// writes): callers take it after each feed and each write.
class TlsStream {
 public:
  static std::unique_ptr<TlsStream> server(const TlsServerContext& ctx, std::string* error);
  // The ClientHello is ready in take_ciphertext() on return.
  static std::unique_ptr<TlsStream> client(const TlsClientContext& ctx, std::string* error);
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  // Bytes received from the peer; advances the handshake. False once the stream has failed.
  bool feed_ciphertext(std::span<const uint8_t> bytes);
  // Appends every plaintext byte decrypted so far to *out. False once the stream has failed.
  bool read_plaintext(std::vector<uint8_t>* out);
  // Encrypts `bytes` (held until the handshake is done if it is not yet). False once failed.
  bool write_plaintext(std::span<const uint8_t> bytes);
  // Appends the ciphertext waiting for the peer to *out; returns how many bytes.
  size_t take_ciphertext(std::vector<uint8_t>* out);

  bool handshake_done() const { return handshake_done_; }
  // The peer sent close_notify: no more plaintext will come.
  bool peer_closed() const { return peer_closed_; }
  bool failed() const { return failed_; }
  // Why it failed: OpenSSL's reasons, and the certificate check's when that was the cause.
  const std::string& error() const { return error_; }
  // "TLSv1.3", "TLSv1.2"; empty before the handshake is done.
  std::string_view protocol() const;

 private:
  explicit TlsStream(ssl_st* ssl) : ssl_(ssl) {}
  static std::unique_ptr<TlsStream> make(ssl_ctx_st* ctx, bool server, std::string* error);
  // Runs the handshake as far as the bytes received allow; then writes anything held.
  bool advance();
  bool flush_pending();
  bool fail(int ssl_result, std::string_view during);

  ssl_st* ssl_;                   // owns the two memory BIOs
  std::vector<uint8_t> pending_;  // plaintext written before the handshake was done
  bool handshake_done_ = false;
  bool peer_closed_ = false;
  bool failed_ = false;
  std::string error_;
};

// OpenSSL's error queue of this thread as one line ("; " between entries), emptied. Empty if
// nothing was queued.
std::string tls_error_text();

}  // namespace tally::net
