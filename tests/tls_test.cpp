// TLS end to end over 127.0.0.1, on both back ends, with a throwaway CA and server certificate
// made here at run time with OpenSSL's C API (nothing is written outside a temp dir): the full
// handshake with SCRAM and traffic inside it; bytes on the wire that are not plaintext; a plain
// client refused; a client that trusts another CA, or expects another name, refusing the server
// before it sends any frame; a TLS client to a plain (or silent) server failing within its
// timeout; garbage and stalled handshakes closing only their own connection; TLS 1.2 as the
// floor. Also TlsStream alone (memory to memory) and tallyd's [tls] configuration errors.
#include "net/tls.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <mutex>
#include <thread>

#include "engine/program.h"
#include "net/backend.h"
#include "net/client.h"
#include "net/scram.h"
#include "net/tcp_server.h"
#include "tests/temp_dir.h"
#include "tests/test_server.h"
#include "tools/ledger_service.h"
#include "tools/server_config.h"

using namespace tally;
using namespace tally::net;

namespace {

constexpr uint32_t kProgram = 1;
constexpr uint32_t kPosKey = 11;

// ---- A throwaway PKI ----------------------------------------------------------------------------

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using Cert = std::unique_ptr<X509, X509Free>;

Pkey new_key() {
  Pkey k(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!k) throw std::runtime_error("EVP_PKEY_Q_keygen: " + tls_error_text());
  return k;
}

void add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr || X509_add_ext(cert, ext, -1) != 1)
    throw std::runtime_error(std::string("extension ") + value + ": " + tls_error_text());
  X509_EXTENSION_free(ext);
}

// A certificate for `key` named `cn`, signed by `issuer_key` (self-signed when `issuer` is null):
// a CA, or a server certificate for `san`.
Cert make_cert(EVP_PKEY* key, const char* cn, X509* issuer, EVP_PKEY* issuer_key, const char* san) {
  Cert c(X509_new());
  X509_set_version(c.get(), 2);  // v3
  uint8_t serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(c.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(c.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(c.get()), 24 * 3600);
  X509_set_pubkey(c.get(), key);
  X509_NAME* name = X509_get_subject_name(c.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("Tally tests"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn),
                             -1, -1, 0);
  X509* signer = issuer != nullptr ? issuer : c.get();
  X509_set_issuer_name(c.get(), X509_get_subject_name(signer));
  add_ext(c.get(), signer, NID_subject_key_identifier, "hash");
  if (san == nullptr) {
    add_ext(c.get(), signer, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(c.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(c.get(), signer, NID_authority_key_identifier, "keyid:always");
    add_ext(c.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
    add_ext(c.get(), signer, NID_key_usage, "critical,digitalSignature");
    add_ext(c.get(), signer, NID_ext_key_usage, "serverAuth");
    add_ext(c.get(), signer, NID_subject_alt_name, san);
  }
  if (X509_sign(c.get(), issuer_key != nullptr ? issuer_key : key, EVP_sha256()) == 0)
    throw std::runtime_error("X509_sign: " + tls_error_text());
  return c;
}

std::string pem(X509* c) {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, c);
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  std::string s(p, static_cast<size_t>(n));
  BIO_free(b);
  return s;
}

std::string pem(EVP_PKEY* k) {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr, nullptr);
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  std::string s(p, static_cast<size_t>(n));
  BIO_free(b);
  return s;
}

// PEM text of everything the tests need. `other_ca` signed nothing that is served here;
// `other_key` is nobody's key.
struct Pki {
  std::string ca, server_cert, server_key, other_ca, other_key;
  std::string dns_only_cert;  // server_key's too, for DNS:localhost alone
};

Pki make_pki() {
  Pkey ca_key = new_key(), server_key = new_key(), other_ca_key = new_key(), other_key = new_key();
  Cert ca = make_cert(ca_key.get(), "Tally test CA", nullptr, nullptr, nullptr);
  Cert server = make_cert(server_key.get(), "localhost", ca.get(), ca_key.get(),
                          "IP:127.0.0.1,DNS:localhost");
  Cert other_ca = make_cert(other_ca_key.get(), "Someone else's CA", nullptr, nullptr, nullptr);
  Cert dns_only = make_cert(server_key.get(), "localhost", ca.get(), ca_key.get(), "DNS:localhost");
  return Pki{pem(ca.get()),       pem(server.get()),    pem(server_key.get()),
             pem(other_ca.get()), pem(other_key.get()), pem(dns_only.get())};
}

const Pki& pki() {
  static const Pki p = make_pki();
  return p;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::shared_ptr<TlsServerContext> server_context(const std::string& cert = pki().server_cert) {
  std::string why;
  std::shared_ptr<TlsServerContext> ctx = TlsServerContext::from_pem(cert, pki().server_key, &why);
  if (!ctx) throw std::runtime_error(why);
  return ctx;
}

// ---- A server, sockets --------------------------------------------------------------------------

ApiKey key(uint32_t id) { return tally::testing::test_key(id, kProgram, Role::kPos); }

// A ledger and a server on a free loopback port (tests/test_server.h): TLS when `tls` is given.
class Stack : public tally::testing::ServerStack {
 public:
  Stack(const std::string& dir, BackendKind backend, std::shared_ptr<TlsServerContext> tls,
        ServerLimits limits = {})
      : ServerStack(dir, stack_options(backend, std::move(tls), limits)) {}
  ClientOptions options(bool tls = true) const {
    ClientOptions o = client(kPosKey);
    o.attempts = 1;  // a refused handshake must show as the error it is, not as retries
    o.tls = true;
    o.tls_ca_pem = pki().ca;
    if (!tls) o = plain(o);
    return o;
  }
  static ClientOptions plain(ClientOptions o) {
    o.tls = false;
    o.tls_ca_pem.clear();
    return o;
  }
  std::string log_text() {
    std::string s;
    for (const std::string& l : log_lines()) s += l + "\n";
    return s;
  }

 private:
  static tally::testing::StackOptions stack_options(BackendKind backend,
                                                    std::shared_ptr<TlsServerContext> tls,
                                                    ServerLimits limits) {
    tally::testing::StackOptions o;
    o.backend = backend;
    o.limits = limits;
    o.keys = {key(kPosKey)};
    o.tls = std::move(tls);
    o.shards = 1;
    return o;
  }
};

using tally::testing::raw_connect;
using tally::testing::submit_one;

Event ev(EventKind kind, uint64_t account, int64_t amount, const std::string& ref) {
  return tally::testing::event(kind, account, amount, ref, kProgram);
}

// A listening socket on a free loopback port; *port says which.
int raw_listen(uint16_t* port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 8) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(fd);
    return -1;
  }
  *port = ntohs(a.sin_port);
  return fd;
}

// Reads (and discards) until the peer closes: true if it did within `timeout_ms`.
bool closed_by_peer(int fd, int64_t timeout_ms = 10'000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  uint8_t buf[4096];
  for (;;) {
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    deadline - std::chrono::steady_clock::now())
                                    .count());
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    int ready = poll(&p, 1, left);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return false;
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
    if (n < 0 && errno != EINTR && errno != EAGAIN) return true;
  }
}

bool contains(const std::string& hay, std::string_view needle) {
  return hay.find(needle) != std::string::npos;
}

int64_t elapsed_ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               since)
      .count();
}

// A TCP relay from a free loopback port to `target`, for one connection, keeping a copy of
// what passes each way. Ends when both sides have closed (or after 30 s).
class Recorder {
 public:
  explicit Recorder(uint16_t target) {
    listen_fd_ = raw_listen(&port_);
    if (listen_fd_ < 0) throw std::runtime_error("listen");
    thread_ = std::thread([this, target] { run(target); });
  }
  ~Recorder() {
    join();
    close(listen_fd_);
  }
  uint16_t port() const { return port_; }
  void join() {
    if (thread_.joinable()) thread_.join();
  }
  // After join(): client to server, server to client.
  std::string up, down;

 private:
  void run(uint16_t target) {
    pollfd a{listen_fd_, POLLIN, 0};
    int ready;
    do {
      ready = poll(&a, 1, 30'000);
    } while (ready < 0 && errno == EINTR);
    if (ready != 1) return;
    int c = accept(listen_fd_, nullptr, nullptr);
    int s = raw_connect(target);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    bool c_open = true, s_open = true;
    char buf[16384];
    while ((c_open || s_open) && std::chrono::steady_clock::now() < deadline) {
      pollfd p[2] = {{c_open ? c : -1, POLLIN, 0}, {s_open ? s : -1, POLLIN, 0}};
      if (poll(p, 2, 1000) <= 0) continue;
      for (int i = 0; i < 2; ++i) {
        if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        int from = i == 0 ? c : s, to = i == 0 ? s : c;
        ssize_t n = recv(from, buf, sizeof buf, 0);
        if (n <= 0) {
          (i == 0 ? c_open : s_open) = false;
          shutdown(to, SHUT_WR);
          continue;
        }
        (i == 0 ? up : down).append(buf, static_cast<size_t>(n));
        (void)!send(to, buf, static_cast<size_t>(n), MSG_NOSIGNAL);
      }
    }
    close(c);
    close(s);
  }

  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
};

// A TLS client made here with OpenSSL directly, capped at `max_version`: what the server accepts.
// Returns the protocol agreed ("TLSv1.2"), or "failed: " and why.
std::string handshake_capped(uint16_t port, int max_version) {
  int fd = raw_connect(port);
  if (fd < 0) return "failed: connect";
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  // Security level 0 lets this side offer TLS 1.0 and 1.1 at all: the refusal is the server's.
  SSL_CTX_set_security_level(ctx, 0);
  SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
  SSL_CTX_set_max_proto_version(ctx, max_version);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  // A blocking socket: SSL_connect returns only when done, except when a signal interrupts a
  // read (EINTR: WANT_READ), when it is called again, or after the 10 s receive timeout.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  int rc = 0;
  for (;;) {
    ERR_clear_error();
    rc = SSL_connect(ssl);
    int e = SSL_get_error(ssl, rc);
    if (rc == 1 || (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) ||
        std::chrono::steady_clock::now() > deadline)
      break;
  }
  std::string out = rc == 1 ? std::string(SSL_get_version(ssl)) : "failed: " + tls_error_text();
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);
  return out;
}

class TlsTest : public ::testing::TestWithParam<BackendKind> {
 protected:
  void SetUp() override {
    if (GetParam() == BackendKind::kUring) {
      std::string why;
      if (!uring_available(&why)) GTEST_SKIP() << "io_uring back end cannot run here: " << why;
    }
  }
  std::unique_ptr<Stack> start(bool tls = true, ServerLimits limits = {},
                               const std::string& cert = pki().server_cert) {
    auto s = std::make_unique<Stack>(dir_.sub("data" + std::to_string(stacks_++)), GetParam(),
                                     tls ? server_context(cert) : nullptr, limits);
    EXPECT_EQ(s->server->backend(), GetParam()) << s->server->backend_note();
    return s;
  }
  tally::testing::TempDir dir_{"tally-tls-test"};
  int stacks_ = 0;
};

std::string backend_name(const ::testing::TestParamInfo<BackendKind>& info) {
  return info.param == BackendKind::kAsio ? "Asio" : "IoUring";
}

}  // namespace

// ---- End to end ---------------------------------------------------------------------------------

TEST_P(TlsTest, HandshakeScramAndARoundTripInsideTls) {
  auto s = start();
  ClientError e;
  std::optional<Connection> c = Connection::open(s->options(), &e);
  ASSERT_TRUE(c) << e.message;
  EXPECT_EQ(c->tls_protocol(), "TLSv1.3");  // preferred when both ends have it
  EXPECT_EQ(c->session().key_id, kPosKey);
  c->close();

  Client pos(s->options());
  Program p = default_program();
  WireResult r = submit_one(pos, ev(EventKind::kEnroll, 1, 0, "tls-enroll-1"));
  ASSERT_EQ(r.result, Result::kOk);
  EXPECT_EQ(r.available, p.signup_bonus_points);
  r = submit_one(pos, ev(EventKind::kEarn, 1, 12'345, "tls-order-1"));  // 123.45 EUR, 1 point per EUR
  ASSERT_EQ(r.result, Result::kOk);
  EXPECT_EQ(r.points, 123);
  r = submit_one(pos, ev(EventKind::kBalance, 1, 0, ""));
  ASSERT_EQ(r.result, Result::kOk);
  EXPECT_EQ(r.available, p.signup_bonus_points + 123);

  // The CA from a file, and the server by its DNS name (SNI and the DNS SAN).
  std::string ca_file = dir_.sub("ca.pem");
  write_file(ca_file, pki().ca);
  ClientOptions by_name = s->options();
  by_name.tls_ca_pem.clear();
  by_name.tls_ca_file = ca_file;
  by_name.tls_server_name = "localhost";
  Client named(by_name);
  EXPECT_EQ(submit_one(named, ev(EventKind::kBalance, 1, 0, "")).available, p.signup_bonus_points + 123);

  ServerStats st = s->server->stats();
  EXPECT_EQ(st.protocol_errors, 0u) << s->log_text();
  EXPECT_EQ(st.auth_failures, 0u);
}

// Many frames in flight each way, frames larger than a TLS record, and the async client: the
// stream inside TLS is the same stream.
TEST_P(TlsTest, PipelinedLargeAndAsyncTrafficInsideTls) {
  auto s = start();
  ClientError e;
  std::optional<Connection> c = Connection::open(s->options(), &e);
  ASSERT_TRUE(c) << e.message;
  std::vector<uint64_t> ids;
  for (uint64_t a = 1; a <= 100; ++a) {
    uint64_t id;
    std::vector<Event> batch = {
        ev(EventKind::kEnroll, a, 0, "pe" + std::to_string(a)),
        ev(EventKind::kEarn, a, 100 * static_cast<int64_t>(a), "po" + std::to_string(a))};
    ASSERT_FALSE(c->send_events(batch, &id));
    ids.push_back(id);
  }
  std::vector<Event> big;  // 480 KB of events: about thirty TLS records
  for (uint64_t i = 0; i < 5'000; ++i) big.push_back(ev(EventKind::kBalance, 1 + i % 100, 0, ""));
  uint64_t big_id;
  ASSERT_FALSE(c->send_events(big, &big_id));
  ids.push_back(big_id);
  for (uint64_t want : ids) {
    Reply r;
    ASSERT_FALSE(c->receive(&r, 20'000));
    ASSERT_EQ(r.request_id, want);
    ASSERT_EQ(r.results.size(), want == big_id ? big.size() : 2u);
    for (const WireResult& w : r.results) EXPECT_EQ(w.result, Result::kOk);
  }

  AsyncClient::Options o;
  o.client = s->options();
  o.batch_events_max = 100;
  std::atomic<uint64_t> ok{0}, bad{0};
  {
    AsyncClient ac(o);
    for (uint64_t a = 1'000; a < 3'000; ++a)
      ac.submit(ev(EventKind::kEnroll, a, 0, "ae" + std::to_string(a)),
                [&](const WireResult& r, const ClientError& err) {
                  (!err && r.result == Result::kOk ? ok : bad).fetch_add(1);
                });
    ac.flush();
  }
  EXPECT_EQ(ok.load(), 2'000u);
  EXPECT_EQ(bad.load(), 0u);
}

TEST_P(TlsTest, TheWireCarriesNoPlaintextAndAPlainClientIsRefused) {
  auto s = start();
  // The search below finds a plain frame: a control for the assertions on the recording.
  std::vector<uint8_t> frame;
  append_frame(frame, MsgType::kPing, 1, {}, 0);
  ASSERT_TRUE(contains(std::string(frame.begin(), frame.end()), "TLYP"));

  Recorder rec(s->server->port());
  {
    ClientOptions o = s->options();
    o.port = rec.port();
    Client pos(o);
    ASSERT_EQ(submit_one(pos, ev(EventKind::kEnroll, 2, 0, "wire-enroll")).result, Result::kOk);
    ASSERT_EQ(submit_one(pos, ev(EventKind::kEarn, 2, 5'000, "wire-order")).result, Result::kOk);
  }
  rec.join();
  ASSERT_GT(rec.up.size(), 200u);
  ASSERT_GT(rec.down.size(), 200u);
  EXPECT_EQ(static_cast<uint8_t>(rec.up[0]), 0x16);  // a TLS handshake record: the ClientHello
  EXPECT_EQ(static_cast<uint8_t>(rec.down[0]), 0x16);
  EXPECT_FALSE(contains(rec.up, "TLYP")) << "a plaintext frame from the client";
  EXPECT_FALSE(contains(rec.down, "TLYP")) << "a plaintext frame from the server";
  EXPECT_FALSE(contains(rec.up, "n,,n=" + std::to_string(kPosKey)))
      << "the SCRAM start in plaintext";

  // A plain client: its first frame is not TLS, the server closes, the client says so.
  ClientOptions plain = s->options(false);
  plain.connect_timeout_ms = 5'000;
  auto t0 = std::chrono::steady_clock::now();
  ClientError e;
  EXPECT_FALSE(Connection::open(plain, &e));
  EXPECT_TRUE(e.kind == ClientError::Kind::kClosed || e.kind == ClientError::Kind::kProtocol)
      << to_string(e.kind) << ": " << e.message;
  EXPECT_LT(elapsed_ms(t0), 5'000);
  ASSERT_TRUE(s->server->wait_open_at_most(0, 10'000));
  EXPECT_EQ(s->logged("TLS failure from 127.0.0.1"), 1) << s->log_text();
  EXPECT_EQ(s->server->stats().protocol_errors, 1u);
  // The server is up for TLS clients.
  Client after(s->options());
  EXPECT_EQ(submit_one(after, ev(EventKind::kBalance, 2, 0, "")).result, Result::kOk);
}

TEST_P(TlsTest, AClientThatTrustsAnotherCaRefusesTheServerBeforeAnyFrame) {
  auto s = start();
  ClientOptions o = s->options();
  o.tls_ca_pem = pki().other_ca;
  ClientError e;
  EXPECT_FALSE(Connection::open(o, &e));
  EXPECT_EQ(e.kind, ClientError::Kind::kTls) << e.message;
  EXPECT_TRUE(contains(e.message, "certificate")) << e.message;
  EXPECT_FALSE(e.retryable());
  // Once the server is done with that connection: not one frame arrived (the SCRAM start, let
  // alone the proof), so no handshake failed either; the client's alert was logged.
  ASSERT_TRUE(s->server->wait_open_at_most(0, 10'000));
  ServerStats st = s->server->stats();
  EXPECT_EQ(st.frames_in, 0u);
  EXPECT_EQ(st.auth_failures, 0u);
  EXPECT_EQ(s->logged("TLS failure from 127.0.0.1"), 1) << s->log_text();
  // The system trust store does not know the throwaway CA either.
  o.tls_ca_pem.clear();
  EXPECT_FALSE(Connection::open(o, &e));
  EXPECT_EQ(e.kind, ClientError::Kind::kTls) << e.message;
  ASSERT_TRUE(s->server->wait_open_at_most(0, 10'000));
  EXPECT_EQ(s->server->stats().frames_in, 0u);
}

TEST_P(TlsTest, AServerWithAnotherNameIsRefused) {
  auto s = start();
  for (const char* name : {"other.example", "127.0.0.2"}) {
    SCOPED_TRACE(name);
    ClientOptions o = s->options();
    o.tls_server_name = name;
    ClientError e;
    EXPECT_FALSE(Connection::open(o, &e));
    EXPECT_EQ(e.kind, ClientError::Kind::kTls) << e.message;
    EXPECT_TRUE(contains(e.message, "mismatch")) << e.message;  // hostname / IP address mismatch
  }
  ASSERT_TRUE(s->server->wait_open_at_most(0, 10'000));
  EXPECT_EQ(s->server->stats().frames_in, 0u);
}

// With no tls_server_name the certificate must name the host dialled: never no check at all.
TEST_P(TlsTest, WithoutAServerNameTheHostDialledIsChecked) {
  auto s = start(true, {}, pki().dns_only_cert);
  ClientOptions o = s->options();  // host 127.0.0.1, which this certificate does not name
  ClientError e;
  EXPECT_FALSE(Connection::open(o, &e));
  EXPECT_EQ(e.kind, ClientError::Kind::kTls) << e.message;
  EXPECT_TRUE(contains(e.message, "IP address mismatch")) << e.message;
  o.host = "localhost";  // which it does
  std::optional<Connection> c = Connection::open(o, &e);
  EXPECT_TRUE(c) << e.message;
}

TEST_P(TlsTest, ATlsClientToAPlainOrSilentServerFailsWithinItsTimeout) {
  auto s = start(false);
  ClientOptions o = s->options();
  o.connect_timeout_ms = 3'000;
  auto t0 = std::chrono::steady_clock::now();
  ClientError e;
  EXPECT_FALSE(Connection::open(o, &e));
  EXPECT_EQ(e.kind, ClientError::Kind::kTls) << to_string(e.kind) << ": " << e.message;
  EXPECT_LT(elapsed_ms(t0), o.connect_timeout_ms);  // the plain server's answer ends it at once
  // The plain server serves plain clients as before.
  Client plain(s->options(false));
  EXPECT_EQ(submit_one(plain, ev(EventKind::kEnroll, 3, 0, "plain-enroll")).result, Result::kOk);

  // A port that accepts (the kernel's backlog) and never says anything: the connect timeout.
  uint16_t port = 0;
  int silent = raw_listen(&port);
  ASSERT_GE(silent, 0);
  o.port = port;
  o.connect_timeout_ms = 500;
  t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(Connection::open(o, &e));
  int64_t took = elapsed_ms(t0);
  EXPECT_EQ(e.kind, ClientError::Kind::kTimeout) << e.message;
  EXPECT_GE(took, 500 - 50);
  EXPECT_LT(took, 500 + 2'000);
  close(silent);
}

// Garbage where TLS is expected, and a TLS stream corrupted after its handshake: each closes its
// own connection at once (the handshake timeout is far off), and a TLS client connected meanwhile
// is served as before.
TEST_P(TlsTest, GarbageClosesOnlyItsOwnConnection) {
  ServerLimits limits;
  limits.handshake_timeout_ms = 120'000;
  auto s = start(true, limits);
  Client bystander(s->options());
  ASSERT_EQ(submit_one(bystander, ev(EventKind::kEnroll, 4, 0, "bystander")).result, Result::kOk);

  // Random bytes behind the header of one whole 64-byte application-data record (so that the
  // server has all of it and must judge it): before the handshake, and later inside one.
  std::vector<uint8_t> random(4096);
  RAND_bytes(random.data(), static_cast<int>(random.size()));
  const uint8_t header[] = {0x17, 0x03, 0x03, 0x00, 64 - 5};
  std::copy(std::begin(header), std::end(header), random.begin());
  std::vector<uint8_t> huge_record = {0x16, 0x03, 0x01, 0xff, 0xff};  // longer than TLS allows
  huge_record.resize(4096, 0xAB);
  std::vector<uint8_t> plain_frame;
  append_frame(plain_frame, MsgType::kPing, 1, {}, 0);
  struct Case {
    const char* name;
    std::vector<uint8_t> bytes;
  };
  std::vector<Case> cases = {{"random bytes", random},
                             {"an oversized handshake record", huge_record},
                             {"a plaintext frame", plain_frame}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    int fd = raw_connect(s->server->port());
    ASSERT_GE(fd, 0);
    ASSERT_EQ(send(fd, c.bytes.data(), c.bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(c.bytes.size()));
    EXPECT_TRUE(closed_by_peer(fd, 10'000));
    close(fd);
  }

  // Established, then bytes that are not TLS records on its socket (bypassing its TLS).
  ClientError e;
  std::optional<Connection> c = Connection::open(s->options(), &e);
  ASSERT_TRUE(c) << e.message;
  ASSERT_EQ(send(c->fd(), random.data(), 64, MSG_NOSIGNAL), 64);
  Reply r;
  e = c->receive(&r, 10'000);
  EXPECT_TRUE(e.kind == ClientError::Kind::kClosed || e.kind == ClientError::Kind::kTls)
      << to_string(e.kind) << ": " << e.message;

  ASSERT_TRUE(s->server->wait_open_at_most(1, 10'000));  // only the bystander
  EXPECT_EQ(s->logged("TLS failure from 127.0.0.1"), 4) << s->log_text();
  EXPECT_EQ(s->server->stats().protocol_errors, 4u);
  WireResult b = submit_one(bystander, ev(EventKind::kBalance, 4, 0, ""));
  EXPECT_EQ(b.result, Result::kOk);
  EXPECT_EQ(b.available, default_program().signup_bonus_points);
  EXPECT_EQ(bystander.reconnects(), 0u);
}

// A TLS handshake begun and never finished (slow loris at the TLS layer): the handshake timeout.
TEST_P(TlsTest, AStalledTlsHandshakeIsTimedOut) {
  ServerLimits limits;
  limits.handshake_timeout_ms = 300;
  auto s = start(true, limits);
  int fd = raw_connect(s->server->port());
  ASSERT_GE(fd, 0);
  const uint8_t cut_short[] = {0x16, 0x03, 0x01, 0x00, 0x80, 0x01};  // 1 of 128 bytes
  ASSERT_EQ(send(fd, cut_short, sizeof cut_short, MSG_NOSIGNAL), 6);
  EXPECT_TRUE(closed_by_peer(fd, 10'000));
  close(fd);
  ASSERT_TRUE(s->server->wait_open_at_most(0, 10'000));
  EXPECT_EQ(s->logged("TLS failure"), 0) << s->log_text();  // a timeout, not a TLS error
}

TEST_P(TlsTest, TlsOneDotTwoIsTheFloor) {
  auto s = start();
  EXPECT_EQ(handshake_capped(s->server->port(), TLS1_2_VERSION), "TLSv1.2");
  std::string old = handshake_capped(s->server->port(), TLS1_1_VERSION);
  EXPECT_TRUE(contains(old, "failed")) << old;
  EXPECT_TRUE(contains(old, "protocol version")) << old;  // the server's alert
  ASSERT_TRUE(s->server->wait_open_at_most(0, 10'000));
  EXPECT_EQ(s->logged("unsupported protocol"), 1) << s->log_text();
}

INSTANTIATE_TEST_SUITE_P(Backends, TlsTest,
                         ::testing::Values(BackendKind::kAsio, BackendKind::kUring), backend_name);

// ---- TlsStream alone, memory to memory ----------------------------------------------------------

namespace {

// Moves what each side has for the other until neither has anything.
void shuttle(TlsStream& client, TlsStream& server, std::vector<uint8_t>* to_client_plain,
             std::vector<uint8_t>* to_server_plain) {
  for (int round = 0; round < 20; ++round) {
    std::vector<uint8_t> a, b;
    client.take_ciphertext(&a);
    server.take_ciphertext(&b);
    if (a.empty() && b.empty()) return;
    if (!a.empty() && server.feed_ciphertext(a)) server.read_plaintext(to_server_plain);
    if (!b.empty() && client.feed_ciphertext(b)) client.read_plaintext(to_client_plain);
  }
}

}  // namespace

TEST(TlsStreamTest, BothWaysThroughMemoryAndATamperedRecordFails) {
  std::string why;
  std::shared_ptr<TlsServerContext> sctx = server_context();
  TlsClientOptions co;
  co.ca_pem = pki().ca;
  co.server_name = "localhost";
  std::shared_ptr<TlsClientContext> cctx = TlsClientContext::create(co, &why);
  ASSERT_TRUE(cctx) << why;
  std::unique_ptr<TlsStream> client = TlsStream::client(*cctx, &why);
  ASSERT_TRUE(client) << why;
  std::unique_ptr<TlsStream> server = TlsStream::server(*sctx, &why);
  ASSERT_TRUE(server) << why;
  std::vector<uint8_t> at_client, at_server;
  // Written before the handshake is done: held, then sent.
  const std::string hello = "hello from the server";
  ASSERT_TRUE(server->write_plaintext(
      std::span(reinterpret_cast<const uint8_t*>(hello.data()), hello.size())));
  shuttle(*client, *server, &at_client, &at_server);
  ASSERT_TRUE(client->handshake_done()) << client->error();
  ASSERT_TRUE(server->handshake_done()) << server->error();
  EXPECT_EQ(client->protocol(), "TLSv1.3");
  EXPECT_EQ(std::string(at_client.begin(), at_client.end()), hello);
  std::vector<uint8_t> big(100'000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 7);
  ASSERT_TRUE(client->write_plaintext(big));
  shuttle(*client, *server, &at_client, &at_server);
  EXPECT_EQ(at_server, big);

  // One flipped bit in a record: the server refuses it (AEAD), and says so.
  ASSERT_TRUE(client->write_plaintext(std::span(big).first(100)));
  std::vector<uint8_t> record;
  client->take_ciphertext(&record);
  ASSERT_GT(record.size(), 100u);
  record[record.size() / 2] ^= 0x01;
  at_server.clear();
  EXPECT_FALSE(server->feed_ciphertext(record) && server->read_plaintext(&at_server));
  EXPECT_TRUE(server->failed());
  EXPECT_TRUE(at_server.empty());
  EXPECT_FALSE(server->error().empty());
  EXPECT_FALSE(server->write_plaintext(big));
}

TEST(TlsStreamTest, ContextErrorsSayWhatIsWrong) {
  std::string why;
  TlsServerContext::Input culprit = TlsServerContext::Input::kNone;
  EXPECT_FALSE(TlsServerContext::from_pem("not a certificate", pki().server_key, &why, &culprit));
  EXPECT_EQ(culprit, TlsServerContext::Input::kCertificate);
  EXPECT_TRUE(contains(why, "no PEM certificate")) << why;
  EXPECT_FALSE(TlsServerContext::from_pem(pki().server_cert, pki().other_key, &why, &culprit));
  EXPECT_EQ(culprit, TlsServerContext::Input::kPrivateKey);
  EXPECT_TRUE(contains(why, "is not the private key")) << why;
  EXPECT_FALSE(TlsServerContext::from_pem(pki().server_cert, pki().server_cert, &why, &culprit));
  EXPECT_EQ(culprit, TlsServerContext::Input::kPrivateKey);
  TlsClientOptions co;
  co.ca_file = "/nonexistent/ca.pem";
  EXPECT_FALSE(TlsClientContext::create(co, &why));
  EXPECT_TRUE(contains(why, "/nonexistent/ca.pem")) << why;
}

// ---- tallyd's [tls] -----------------------------------------------------------------------------

TEST(TallydTlsConfigTest, LoadsTheFilesAndNamesTheOneThatIsWrong) {
  tally::testing::TempDir dir("tally-tls-config");
  write_file(dir.sub("server.pem"), pki().server_cert);
  write_file(dir.sub("server.key"), pki().server_key);
  write_file(dir.sub("other.key"), pki().other_key);
  std::string key_block = "[[key]]\nid = 11\nprogram = 1\nrole = \"pos\"\nverifier = \"" +
                          scram::encode_verifier(key(kPosKey).verifier) + "\"\n";
  auto load = [&](const std::string& tls, TallydConfig* c, ConfigError* err) {
    return load_tallyd_config_string(tls + key_block, "tallyd.toml", dir.path(), c, err);
  };
  TallydConfig c;
  ConfigError err;
  ASSERT_TRUE(load("[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n", &c, &err))
      << err.to_string();
  ASSERT_TRUE(c.tls);
  EXPECT_EQ(c.tls_cert_file, dir.sub("server.pem"));  // relative to the file's directory
  EXPECT_EQ(c.tls_key_file, dir.sub("server.key"));
  TallydConfig none;
  ASSERT_TRUE(load("", &none, &err)) << err.to_string();
  EXPECT_FALSE(none.tls);

  struct Case {
    std::string tls, field, says;
  };
  std::vector<Case> cases = {
      {"[tls]\ncert = \"missing.pem\"\nkey = \"server.key\"\n", "tls.cert",
       dir.sub("missing.pem") + ": No such file"},
      {"[tls]\ncert = \"server.pem\"\nkey = \"other.key\"\n", "tls.key",
       dir.sub("other.key") + ": is not the private key of the certificate in " +
           dir.sub("server.pem")},
      {"[tls]\ncert = \"server.key\"\nkey = \"server.key\"\n", "tls.cert",
       dir.sub("server.key") + ": no PEM certificate"},
      {"[tls]\ncert = \"server.pem\"\n", "tls.key", "missing"},
      {"[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nca = \"x\"\n", "tls.ca", "unknown key"},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.tls);
    TallydConfig out;
    ASSERT_FALSE(load(k.tls, &out, &err));
    EXPECT_EQ(err.field, k.field) << err.to_string();
    EXPECT_TRUE(contains(err.message, k.says)) << err.to_string();
    EXPECT_GT(err.line, 0) << err.to_string();
  }
}
