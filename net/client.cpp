#include "net/client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "net/scram.h"

// Sections: errors; socket helpers; Connection (handshake, send, receive); Client (retries);
// AsyncClient (batching, pipelining, resend on reconnect).

namespace tally::net {
namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
ClientError err(ClientError::Kind k, std::string m, ErrorCode c = ErrorCode::kNone) {
  ClientError e;
  e.kind = k;
  e.message = std::move(m);
  e.server_code = c;
  return e;
}

// Connects with a deadline; the socket stays non-blocking (every later call polls).
int connect_to(const std::string& host, uint16_t port, int64_t timeout_ms, std::string* why) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0) {
    *why = "cannot resolve '" + host + "': " + gai_strerror(rc);
    return -1;
  }
  int fd = -1;
  for (addrinfo* a = res; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
      *why = std::strerror(errno);
      ::close(fd);
      fd = -1;
      continue;
    }
    pollfd p{fd, POLLOUT, 0};
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (poll(&p, 1, static_cast<int>(timeout_ms)) != 1) {
      *why = "connect timed out";
    } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0) {
      *why = std::strerror(soerr != 0 ? soerr : errno);
    } else {
      break;
    }
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd >= 0) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return fd;
}

ClientError send_all(int fd, const uint8_t* p, size_t n, int64_t timeout_ms) {
  int64_t deadline = now_ms() + timeout_ms;
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w > 0) {
      p += w;
      n -= static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      return err(ClientError::Kind::kClosed, std::string("send: ") + std::strerror(errno));
    int64_t left = deadline - now_ms();
    if (left <= 0) return err(ClientError::Kind::kTimeout, "send timed out");
    pollfd pf{fd, POLLOUT, 0};
    poll(&pf, 1, static_cast<int>(left));
  }
  return {};
}

}  // namespace

bool ClientError::retryable() const {
  switch (kind) {
    case Kind::kConnect:
    case Kind::kTimeout:
    case Kind::kClosed: return true;
    case Kind::kServer:
      return server_code == ErrorCode::kShuttingDown || server_code == ErrorCode::kStorageFailed ||
             server_code == ErrorCode::kBusy || server_code == ErrorCode::kTooManyConnections ||
             server_code == ErrorCode::kTimeout;
    default: return false;
  }
}

std::string_view to_string(ClientError::Kind k) {
  switch (k) {
    case ClientError::Kind::kNone: return "none";
    case ClientError::Kind::kConnect: return "connect";
    case ClientError::Kind::kAuth: return "auth";
    case ClientError::Kind::kProtocol: return "protocol";
    case ClientError::Kind::kServer: return "server";
    case ClientError::Kind::kTimeout: return "timeout";
    case ClientError::Kind::kClosed: return "closed";
    case ClientError::Kind::kUsage: return "usage";
    case ClientError::Kind::kTls: return "tls";
  }
  return "unknown";
}

// ---- Connection ---------------------------------------------------------------------------------

Connection::Connection(Connection&& o) noexcept
    : fd_(o.fd_),
      next_request_id_(o.next_request_id_),
      session_(o.session_),
      reader_(std::move(o.reader_)),
      tls_(std::move(o.tls_)),
      tls_buf_(std::move(o.tls_buf_)) {
  o.fd_ = -1;
}

Connection& Connection::operator=(Connection&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = o.fd_;
    next_request_id_ = o.next_request_id_;
    session_ = o.session_;
    reader_ = std::move(o.reader_);
    tls_ = std::move(o.tls_);
    tls_buf_ = std::move(o.tls_buf_);
    o.fd_ = -1;
  }
  return *this;
}

Connection::~Connection() { close(); }

void Connection::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

std::optional<Connection> Connection::open(const ClientOptions& o, ClientError* error) {
  std::string why;
  int fd = connect_to(o.host, o.port, o.connect_timeout_ms, &why);
  if (fd < 0) {
    *error = err(ClientError::Kind::kConnect, "cannot connect to " + o.host + ":" + std::to_string(o.port) + ": " + why);
    return std::nullopt;
  }
  Connection c;
  c.fd_ = fd;
  if (o.tls) {
    // Before any frame: the SCRAM exchange, key id included, is only ever sent encrypted.
    if (ClientError e = c.start_tls(o, o.connect_timeout_ms)) {
      *error = e;
      return std::nullopt;
    }
  }
  scram::ClientExchange ex(std::to_string(o.key_id), o.secret);
  std::optional<std::string> first = ex.client_first();
  if (!first) {
    *error = err(ClientError::Kind::kUsage, "cannot start the handshake");
    return std::nullopt;
  }
  auto text = [](const std::string& s) { return std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()); };
  uint64_t id = 0;
  FrameHeader h;
  std::vector<uint8_t> body;
  auto expect = [&](MsgType want) -> bool {
    ClientError e = c.read_frame(&h, &body, o.connect_timeout_ms);
    if (!e && h.type == MsgType::kError) {
      ErrorCode code = ErrorCode::kNone;
      std::string m;
      (void)decode_error(body, &code, &m);
      e = err(code == ErrorCode::kAuthFailed ? ClientError::Kind::kAuth : ClientError::Kind::kServer,
              "server: " + std::string(to_string(code)) + ": " + m, code);
    } else if (!e && h.type != want) {
      e = err(ClientError::Kind::kProtocol, "handshake: unexpected " + std::string(to_string(h.type)));
    }
    if (e) *error = e;
    return !e;
  };
  if (ClientError e = c.send_frame(MsgType::kAuthStart, text(*first), 0, &id)) {
    *error = e;
    return std::nullopt;
  }
  if (!expect(MsgType::kAuthChallenge)) return std::nullopt;
  std::optional<std::string> final_msg = ex.server_first(std::string_view(reinterpret_cast<const char*>(body.data()), body.size()));
  if (!final_msg) {
    *error = err(ClientError::Kind::kAuth, "handshake: the server's challenge is malformed");
    return std::nullopt;
  }
  if (ClientError e = c.send_frame(MsgType::kAuthFinish, text(*final_msg), 0, &id)) {
    *error = e;
    return std::nullopt;
  }
  if (!expect(MsgType::kAuthOk)) return std::nullopt;
  if (!decode_session_info(body.data(), &c.session_)) {
    *error = err(ClientError::Kind::kProtocol, "handshake: malformed session info");
    return std::nullopt;
  }
  std::string_view server_final(reinterpret_cast<const char*>(body.data()) + kAuthOkInfoBytes, body.size() - kAuthOkInfoBytes);
  if (!ex.server_final(server_final)) {
    *error = err(ClientError::Kind::kAuth, "handshake: the server did not prove it knows the key (signature mismatch)");
    return std::nullopt;
  }
  return c;
}

ClientError Connection::send_frame(MsgType type, std::span<const uint8_t> body, uint32_t records, uint64_t* id) {
  if (fd_ < 0) return err(ClientError::Kind::kClosed, "not connected");
  *id = next_request_id_++;
  std::vector<uint8_t> f;
  f.reserve(kHeaderBytes + body.size());
  append_frame(f, type, *id, body, records);
  ClientError e = write_bytes(f, 30'000);
  if (e) close();
  return e;
}

ClientError Connection::start_tls(const ClientOptions& o, int64_t timeout_ms) {
  const std::string where = o.host + ":" + std::to_string(o.port);
  TlsClientOptions t;
  t.ca_file = o.tls_ca_file;
  t.ca_pem = o.tls_ca_pem;
  // The name checked is the name dialled unless told otherwise: never no check at all.
  t.server_name = o.tls_server_name.empty() ? o.host : o.tls_server_name;
  std::string why;
  std::shared_ptr<TlsClientContext> ctx = TlsClientContext::create(t, &why);
  if (ctx) tls_ = TlsStream::client(*ctx, &why);
  if (!tls_) return err(ClientError::Kind::kTls, "TLS: " + why);
  int64_t deadline = now_ms() + timeout_ms;
  uint8_t buf[16 << 10];
  for (;;) {
    // What the handshake produced goes out first, even after a failure: the alert tells the
    // server why.
    tls_buf_.clear();
    tls_->take_ciphertext(&tls_buf_);
    if (!tls_buf_.empty()) {
      int64_t left = std::max<int64_t>(1, deadline - now_ms());
      ClientError e = send_all(fd_, tls_buf_.data(), tls_buf_.size(), left);
      if (e && !tls_->failed()) return e;
    }
    if (tls_->failed()) return err(ClientError::Kind::kTls, where + ": " + tls_->error());
    // Records behind the handshake's last one (a session ticket, say) are taken now: they would
    // otherwise wait in the TLS buffer until more bytes came from the socket.
    if (tls_->handshake_done()) return received({});
    ssize_t r = recv(fd_, buf, sizeof buf, 0);
    if (r > 0) {
      tls_->feed_ciphertext({buf, static_cast<size_t>(r)});  // a failure is reported above
      continue;
    }
    if (r == 0)
      return err(ClientError::Kind::kTls,
                 where + ": TLS handshake: the server closed the connection (does it serve TLS?)");
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      return err(ClientError::Kind::kClosed, std::string("recv: ") + std::strerror(errno));
    int64_t left = deadline - now_ms();
    if (left <= 0)
      return err(ClientError::Kind::kTimeout, where + ": TLS handshake not finished in time");
    pollfd p{fd_, POLLIN, 0};
    poll(&p, 1, static_cast<int>(left));
  }
}

ClientError Connection::write_bytes(std::span<const uint8_t> bytes, int64_t timeout_ms) {
  if (!tls_) return send_all(fd_, bytes.data(), bytes.size(), timeout_ms);
  if (!tls_->write_plaintext(bytes)) return err(ClientError::Kind::kTls, tls_->error());
  tls_buf_.clear();
  tls_->take_ciphertext(&tls_buf_);
  return send_all(fd_, tls_buf_.data(), tls_buf_.size(), timeout_ms);
}

ClientError Connection::received(std::span<const uint8_t> bytes) {
  if (!tls_) {
    reader_.feed(bytes);
    return {};
  }
  tls_buf_.clear();
  bool ok = tls_->feed_ciphertext(bytes) && tls_->read_plaintext(&tls_buf_);
  if (!tls_buf_.empty()) reader_.feed(tls_buf_);
  // TLS may have something to say back (a key update's answer, an alert): rare, so no buffer kept.
  std::vector<uint8_t> answer;
  if (tls_->take_ciphertext(&answer) > 0) (void)send_all(fd_, answer.data(), answer.size(), 30'000);
  if (!ok) {
    close();
    return err(ClientError::Kind::kTls, tls_->error());
  }
  return {};
}

ClientError Connection::send_events(std::span<const Event> events, uint64_t* request_id) {
  if (events.empty()) return err(ClientError::Kind::kUsage, "no events");
  if (session_.events_per_frame_max != 0 && events.size() > session_.events_per_frame_max)
    return err(ClientError::Kind::kUsage, "more events than the server takes per frame (" +
                                              std::to_string(session_.events_per_frame_max) + ")");
  std::vector<uint8_t> body(events.size() * kEventRecordBytes);
  for (size_t i = 0; i < events.size(); ++i) encode_event(body.data() + i * kEventRecordBytes, events[i]);
  return send_frame(MsgType::kEvents, body, static_cast<uint32_t>(events.size()), request_id);
}

ClientError Connection::send_history(const Query& q, uint64_t* request_id) {
  uint8_t b[kQueryRecordBytes];
  encode_history_query(b, q);
  return send_frame(MsgType::kHistory, b, 1, request_id);
}

ClientError Connection::send_lookup(const Query& q, uint64_t* request_id) {
  uint8_t b[kQueryRecordBytes];
  encode_lookup_query(b, q);
  return send_frame(MsgType::kLookup, b, 1, request_id);
}

ClientError Connection::send_statement(uint32_t program, uint64_t account, uint64_t* request_id) {
  uint8_t b[kQueryRecordBytes];
  encode_statement_query(b, program, account);
  return send_frame(MsgType::kStatement, b, 1, request_id);
}

ClientError Connection::send_stats(uint64_t* request_id) { return send_frame(MsgType::kStats, {}, 0, request_id); }
ClientError Connection::send_info(uint64_t* request_id) { return send_frame(MsgType::kInfo, {}, 0, request_id); }

ClientError Connection::send_subscribe(const SubscribeRequest& r, uint64_t* request_id) {
  if (!r.name.empty() && !valid_consumer_name(r.name))
    return err(ClientError::Kind::kUsage, "a consumer name is 1 to 64 of A-Z a-z 0-9 . _ -");
  uint8_t b[kSubscribeRecordBytes];
  encode_subscribe(b, r);
  return send_frame(MsgType::kSubscribe, b, 1, request_id);
}

ClientError Connection::send_ack(uint64_t lsn) {
  uint8_t b[kAckRecordBytes];
  encode_ack(b, lsn);
  uint64_t id = 0;
  return send_frame(MsgType::kAck, b, 1, &id);
}

ClientError Connection::send_ping(std::span<const uint8_t> body, uint64_t* request_id) {
  return send_frame(MsgType::kPing, body, 0, request_id);
}

ClientError Connection::send_raw(std::span<const uint8_t> bytes) {
  if (fd_ < 0) return err(ClientError::Kind::kClosed, "not connected");
  return write_bytes(bytes, 30'000);
}

ClientError Connection::read_frame(FrameHeader* h, std::vector<uint8_t>* body, int64_t timeout_ms) {
  int64_t deadline = now_ms() + timeout_ms;
  uint8_t buf[64 << 10];
  for (;;) {
    if (fd_ < 0) return err(ClientError::Kind::kClosed, "not connected");
    std::span<const uint8_t> b;
    FrameReader::Status s = reader_.next(h, &b);
    if (s == FrameReader::Status::kFrame) {
      body->assign(b.begin(), b.end());
      return {};
    }
    if (s == FrameReader::Status::kError) {
      close();
      return err(ClientError::Kind::kProtocol, "malformed frame from the server: " + std::string(to_string(reader_.error())));
    }
    ssize_t r = recv(fd_, buf, sizeof buf, 0);
    if (r > 0) {
      if (ClientError e = received({buf, static_cast<size_t>(r)})) return e;
      continue;
    }
    if (r == 0) {
      close();
      return err(ClientError::Kind::kClosed, "the server closed the connection");
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      std::string m = std::strerror(errno);
      close();
      return err(ClientError::Kind::kClosed, "recv: " + m);
    }
    int64_t left = deadline - now_ms();
    if (left <= 0) return err(ClientError::Kind::kTimeout, "no reply in time");
    pollfd p{fd_, POLLIN, 0};
    poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1'000'000)));
  }
}

bool Connection::reply_buffered() { return reader_.frame_ready(); }

ClientError Connection::receive(Reply* reply, int64_t timeout_ms) {
  FrameHeader h;
  std::vector<uint8_t> body;
  if (ClientError e = read_frame(&h, &body, timeout_ms)) return e;
  reply->type = h.type;
  reply->request_id = h.request_id;
  reply->results.clear();
  reply->entries.clear();
  reply->body.clear();
  switch (h.type) {
    case MsgType::kResults:
      reply->results.resize(h.record_count);
      for (uint32_t i = 0; i < h.record_count; ++i)
        if (!decode_result(body.data() + size_t{i} * kResultRecordBytes, &reply->results[i]))
          return err(ClientError::Kind::kProtocol, "malformed result record");
      return {};
    case MsgType::kEntries:
      reply->entries.resize(h.record_count);
      for (uint32_t i = 0; i < h.record_count; ++i)
        if (!decode_entry(body.data() + size_t{i} * kEntryRecordBytes, &reply->entries[i]))
          return err(ClientError::Kind::kProtocol, "malformed history entry");
      return {};
    case MsgType::kStatsReply:
      decode_stats(body.data(), &reply->stats);
      return {};
    case MsgType::kStatementReply:
      if (!decode_statement(body, h.record_count, &reply->statement))
        return err(ClientError::Kind::kProtocol, "malformed statement");
      return {};
    case MsgType::kPong:
      reply->body = std::move(body);
      return {};
    case MsgType::kInfoReply:
      reply->body = std::move(body);
      return {};
    case MsgType::kSubscribed:
      if (!decode_subscribed(body.data(), &reply->subscribed))
        return err(ClientError::Kind::kProtocol, "malformed subscribed record");
      return {};
    case MsgType::kLogBatches:
      // Split by the caller (split_log_batches); the body is kept whole.
      reply->batch_count = h.record_count;
      reply->body = std::move(body);
      return {};
    case MsgType::kError: {
      ErrorCode code = ErrorCode::kNone;
      std::string m;
      if (!decode_error(body, &code, &m)) return err(ClientError::Kind::kProtocol, "malformed error frame");
      close();
      return err(ClientError::Kind::kServer, "server: " + std::string(to_string(code)) + ": " + m, code);
    }
    default:
      return err(ClientError::Kind::kProtocol, "unexpected " + std::string(to_string(h.type)) + " from the server");
  }
}

// ---- Client -------------------------------------------------------------------------------------

ClientError Client::connect() {
  if (conn_ && conn_->fd() >= 0) return {};
  ClientError e;
  conn_ = Connection::open(options_, &e);
  return e;
}

template <class Send>
ClientError Client::call(Send send, Reply* reply) {
  ClientError last;
  int64_t backoff = options_.retry_backoff_ms;
  for (uint32_t attempt = 0; attempt < std::max<uint32_t>(1, options_.attempts); ++attempt) {
    if (attempt > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(backoff));  // retry pacing, not sync
      backoff = std::min<int64_t>(backoff * 2, 5'000);
      ++reconnects_;
    }
    if (!conn_ || conn_->fd() < 0) {
      last = connect();
      if (last) {
        conn_.reset();
        if (!last.retryable()) return last;
        continue;
      }
    }
    uint64_t id = 0;
    last = send(*conn_, &id);
    if (!last) last = conn_->receive(reply, options_.request_timeout_ms);
    if (!last && reply->request_id != id) last = err(ClientError::Kind::kProtocol, "reply to another request");
    if (!last) return {};
    conn_.reset();
    if (!last.retryable()) return last;
  }
  return last;
}

ClientError Client::submit(std::span<const Event> events, std::vector<WireResult>* results) {
  Reply r;
  ClientError e = call([&](Connection& c, uint64_t* id) { return c.send_events(events, id); }, &r);
  if (e) return e;
  if (r.type != MsgType::kResults || r.results.size() != events.size())
    return err(ClientError::Kind::kProtocol, "the reply does not match the request");
  *results = std::move(r.results);
  return {};
}

ClientError Client::history(uint32_t program, uint64_t account, uint32_t limit, LogPos before,
                            std::vector<HistoryEntry>* entries) {
  Query q;
  q.program = program;
  q.account = account;
  q.limit = limit;
  q.before = before;
  Reply r;
  ClientError e = call([&](Connection& c, uint64_t* id) { return c.send_history(q, id); }, &r);
  if (e) return e;
  if (r.type != MsgType::kEntries) return err(ClientError::Kind::kProtocol, "the reply does not match the request");
  *entries = std::move(r.entries);
  return {};
}

ClientError Client::lookup(uint32_t program, const Ref128& ref, std::vector<HistoryEntry>* entries) {
  Query q;
  q.program = program;
  q.ref = ref;
  Reply r;
  ClientError e = call([&](Connection& c, uint64_t* id) { return c.send_lookup(q, id); }, &r);
  if (e) return e;
  if (r.type != MsgType::kEntries) return err(ClientError::Kind::kProtocol, "the reply does not match the request");
  *entries = std::move(r.entries);
  return {};
}

ClientError Client::statement(uint32_t program, uint64_t account, StatementReply* out) {
  Reply r;
  ClientError e = call([&](Connection& c, uint64_t* id) { return c.send_statement(program, account, id); }, &r);
  if (e) return e;
  if (r.type != MsgType::kStatementReply) return err(ClientError::Kind::kProtocol, "the reply does not match the request");
  *out = std::move(r.statement);
  return {};
}

ClientError Client::info(std::string* text) {
  Reply r;
  ClientError e = call([&](Connection& c, uint64_t* id) { return c.send_info(id); }, &r);
  if (e) return e;
  if (r.type != MsgType::kInfoReply) return err(ClientError::Kind::kProtocol, "the reply does not match the request");
  text->assign(r.body.begin(), r.body.end());
  return {};
}

ClientError Client::stats(StatsRecord* stats) {
  Reply r;
  ClientError e = call([&](Connection& c, uint64_t* id) { return c.send_stats(id); }, &r);
  if (e) return e;
  if (r.type != MsgType::kStatsReply) return err(ClientError::Kind::kProtocol, "the reply does not match the request");
  *stats = r.stats;
  return {};
}

// ---- AsyncClient --------------------------------------------------------------------------------

AsyncClient::AsyncClient(Options options) : options_(std::move(options)) {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  io_ = std::thread([this] { io_main(); });
}

AsyncClient::~AsyncClient() {
  flush();
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof one);
  io_.join();
  ::close(wake_fd_);
}

void AsyncClient::submit(const Event& event, Callback callback) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return in_flight_frames_ < options_.frames_in_flight_max || stopping_; });
  if (filling_.events.empty()) filling_since_us_ = now_us();
  filling_.events.push_back(event);
  filling_.callbacks.push_back(std::move(callback));
  ++submitted_;
  bool full = filling_.events.size() >= options_.batch_events_max;
  if (full) {
    to_send_.push_back(std::move(filling_));
    filling_ = Frame{};
    ++in_flight_frames_;
  }
  // Decided under the lock: the I/O thread updates completed_ under it (a race TSan found).
  bool wake = full || submitted_ == completed_ + 1;
  lock.unlock();
  if (wake) {
    uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof one);
  }
}

void AsyncClient::flush() {
  std::unique_lock lock(mu_);
  uint64_t target = submitted_;
  if (!filling_.events.empty()) {
    to_send_.push_back(std::move(filling_));
    filling_ = Frame{};
    ++in_flight_frames_;
  }
  lock.unlock();
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof one);
  lock.lock();
  done_cv_.wait(lock, [&] { return completed_ >= target; });
}

bool AsyncClient::ensure_connected() {
  if (conn_ && conn_->fd() >= 0) return true;
  ClientError e;
  conn_ = Connection::open(options_.client, &e);
  if (conn_) {
    std::lock_guard lock(mu_);  // submit() reads it under the lock
    options_.batch_events_max = std::min(options_.batch_events_max, std::max<uint32_t>(1, conn_->session().events_per_frame_max));
    return true;
  }
  conn_.reset();
  return false;
}

void AsyncClient::fail_all(const ClientError& e) {
  // Every frame not answered: its callbacks get the error.
  std::deque<Frame> failed;
  failed.swap(sent_);
  {
    std::lock_guard lock(mu_);
    for (Frame& f : to_send_) failed.push_back(std::move(f));
    to_send_.clear();
  }
  uint64_t n = 0;
  for (Frame& f : failed) {
    for (auto& cb : f.callbacks) cb(WireResult{}, e);
    n += f.events.size();
  }
  std::lock_guard lock(mu_);
  completed_ += n;
  in_flight_frames_ -= failed.size();
  cv_.notify_all();
  done_cv_.notify_all();
}

void AsyncClient::io_main() {
  int64_t backoff = options_.client.retry_backoff_ms;
  for (;;) {
    std::deque<Frame> batch;
    bool stop = false;
    {
      std::lock_guard lock(mu_);
      if (!filling_.events.empty() && now_us() - filling_since_us_ >= options_.linger_us) {
        to_send_.push_back(std::move(filling_));
        filling_ = Frame{};
        ++in_flight_frames_;
      }
      batch.swap(to_send_);
      stop = stopping_ && sent_.empty() && batch.empty();
    }
    if (stop) return;
    if (!batch.empty() || !sent_.empty()) {
      if (!ensure_connected()) {
        // Put them back, count an attempt, back off.
        bool exhausted = false;
        for (Frame& f : batch) exhausted |= ++f.attempts >= options_.client.attempts;
        {
          std::lock_guard lock(mu_);
          for (auto it = batch.rbegin(); it != batch.rend(); ++it) to_send_.push_front(std::move(*it));
        }
        if (exhausted) {
          fail_all(err(ClientError::Kind::kConnect, "cannot reach the server after every attempt"));
          backoff = options_.client.retry_backoff_ms;
        } else {
          std::this_thread::sleep_for(std::chrono::milliseconds(backoff));  // retry pacing
          backoff = std::min<int64_t>(backoff * 2, 5'000);
        }
        continue;
      }
      backoff = options_.client.retry_backoff_ms;
      bool broken = false;
      for (Frame& f : batch) {
        if (!broken && !conn_->send_events(f.events, &f.request_id)) {
          f.sent_ms = now_ms();
        } else {
          broken = true;
        }
        sent_.push_back(std::move(f));
      }
      if (broken) {
        conn_.reset();
        continue;  // resent below, at the next pass
      }
    }
    // Wait for a reply, new work, or the linger deadline.
    bool live = conn_ && conn_->fd() >= 0 && !sent_.empty();
    pollfd p[2] = {{live ? conn_->fd() : -1, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    // A reply already read into the connection's buffer does not make the socket readable.
    bool buffered = live && conn_->reply_buffered();
    int timeout = buffered ? 0 : sent_.empty() ? 100 : static_cast<int>(std::max<int64_t>(1, options_.linger_us / 1000));
    poll(p, 2, timeout);
    if (buffered) p[0].revents |= POLLIN;
    if (p[1].revents & POLLIN) {
      uint64_t v;
      (void)!read(wake_fd_, &v, sizeof v);
    }
    if (sent_.empty() || !(p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      if (!sent_.empty() && now_ms() - sent_.front().sent_ms > options_.client.request_timeout_ms) conn_.reset();
    } else {
      Reply r;
      ClientError e = conn_->receive(&r, options_.client.request_timeout_ms);
      if (!e && (r.type != MsgType::kResults || r.request_id != sent_.front().request_id ||
                 r.results.size() != sent_.front().events.size()))
        e = err(ClientError::Kind::kProtocol, "the reply does not match the request");
      if (!e) {
        Frame f = std::move(sent_.front());
        sent_.pop_front();
        for (size_t i = 0; i < f.callbacks.size(); ++i) f.callbacks[i](r.results[i], ClientError{});
        std::lock_guard lock(mu_);
        completed_ += f.events.size();
        --in_flight_frames_;
        cv_.notify_all();
        done_cv_.notify_all();
        continue;
      }
      if (!e.retryable()) {
        conn_.reset();
        fail_all(e);
        continue;
      }
      conn_.reset();
    }
    if (!conn_ && !sent_.empty()) {
      // Reconnect and resend everything unanswered, in order: the server answers replays.
      reconnects_.fetch_add(1);
      std::lock_guard lock(mu_);
      while (!sent_.empty()) {
        to_send_.push_front(std::move(sent_.back()));
        sent_.pop_back();
      }
    }
  }
}

}  // namespace tally::net
