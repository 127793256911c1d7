// Tally net: the C++ client library (docs/protocol.md on the wire).
//
// Three layers, each built on the one before:
//   Connection   one authenticated TCP connection, pipelined: send requests, receive replies in
//                request order. Blocking sockets with timeouts. One thread at a time.
//   Client       synchronous calls (submit a batch, history, lookup) that reconnect and retry on
//                a broken connection or timeout. Retrying is safe: every mutating event carries
//                its reference, so a retried earn comes back as a replay, never a second credit.
//   AsyncClient  submit(event, callback) from any thread: events are batched into frames (up to
//                the server's limit or a linger time), many frames in flight on one connection, an
//                I/O thread delivers the callbacks; on a broken connection it reconnects and
//                resends every frame not yet answered.
//
// Errors are values (ClientError); nothing here throws except std::bad_alloc.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "net/protocol.h"
#include "net/tls.h"

namespace tally::net {

struct ClientOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 7411;
  uint32_t key_id = 0;
  std::string secret;
  int64_t connect_timeout_ms = 5'000;
  int64_t request_timeout_ms = 30'000;  // a reply not complete by then: the connection is dropped
  uint32_t attempts = 5;                // Client/AsyncClient: tries per request (reconnecting between)
  int64_t retry_backoff_ms = 100;       // doubled after each failed attempt, up to 5 s
  // TLS (net/tls.h), handshaken in Connection::open before SCRAM, which runs inside it unchanged.
  // The server's certificate is always verified: against tls_ca_file and/or tls_ca_pem (PEM), or
  // the system's trusted CAs when both are empty; and it must name tls_server_name, or `host`
  // when that is empty (a DNS name, also sent as SNI, or an IP address matched to an IP SAN).
  bool tls = false;
  std::string tls_ca_file;
  std::string tls_ca_pem;
  std::string tls_server_name;
};

struct ClientError {
  // kTls: the TLS handshake or stream failed (a certificate refused, a server that does not
  // speak TLS); not retryable, since another attempt would meet the same certificate.
  enum class Kind : uint8_t {
    kNone, kConnect, kAuth, kProtocol, kServer, kTimeout, kClosed, kUsage, kTls
  };
  Kind kind = Kind::kNone;
  ErrorCode server_code = ErrorCode::kNone;  // kServer and kAuth: what the server's error said
  std::string message;
  explicit operator bool() const { return kind != Kind::kNone; }
  // Worth another attempt on a new connection (the request may or may not have been applied).
  bool retryable() const;
};
std::string_view to_string(ClientError::Kind k);

// One reply, as received.
struct Reply {
  MsgType type = MsgType::kError;
  uint64_t request_id = 0;
  std::vector<WireResult> results;   // kResults
  std::vector<HistoryEntry> entries; // kEntries
  StatsRecord stats;                 // kStatsReply
  StatementReply statement;          // kStatementReply
  std::vector<uint8_t> body;         // kPong; kLogBatches (split_log_batches)
  SubscribeReply subscribed;         // kSubscribed
  uint32_t batch_count = 0;          // kLogBatches
};

class Connection {
 public:
  // Connects and authenticates (SCRAM-SHA-256, checking the server's signature too).
  static std::optional<Connection> open(const ClientOptions& options, ClientError* error);
  Connection(Connection&& o) noexcept;
  Connection& operator=(Connection&& o) noexcept;
  ~Connection();

  const SessionInfo& session() const { return session_; }
  // Pipelined requests: each returns the request id its reply will carry.
  [[nodiscard]] ClientError send_events(std::span<const Event> events, uint64_t* request_id);
  [[nodiscard]] ClientError send_history(const Query& q, uint64_t* request_id);
  [[nodiscard]] ClientError send_lookup(const Query& q, uint64_t* request_id);
  [[nodiscard]] ClientError send_statement(uint32_t program, uint64_t account, uint64_t* request_id);
  [[nodiscard]] ClientError send_stats(uint64_t* request_id);
  [[nodiscard]] ClientError send_info(uint64_t* request_id);
  // The connection becomes a change stream (docs/protocol.md, "Subscribe"): a kSubscribed reply,
  // then kLogBatches frames until it closes. Only acks and pings may be sent after it.
  [[nodiscard]] ClientError send_subscribe(const SubscribeRequest& r, uint64_t* request_id);
  // A named consumer's cursor: everything through `lsn` is processed (no reply).
  [[nodiscard]] ClientError send_ack(uint64_t lsn);
  [[nodiscard]] ClientError send_ping(std::span<const uint8_t> body, uint64_t* request_id);
  // Raw bytes, as they are (tests of hostile input); inside TLS when the connection is TLS.
  [[nodiscard]] ClientError send_raw(std::span<const uint8_t> bytes);
  // The next reply, waiting at most `timeout_ms`. A server error frame comes back as a
  // ClientError of kind kServer naming its code; the connection is then closed.
  [[nodiscard]] ClientError receive(Reply* reply, int64_t timeout_ms);
  // Whether a whole reply can be taken without waiting for the network.
  bool reply_buffered();
  int fd() const { return fd_; }
  // "TLSv1.3", "TLSv1.2", or empty for plain TCP.
  std::string_view tls_protocol() const { return tls_ ? tls_->protocol() : std::string_view(); }
  void close();

 private:
  Connection() = default;
  ClientError send_frame(MsgType type, std::span<const uint8_t> body, uint32_t records, uint64_t* request_id);
  ClientError read_frame(FrameHeader* h, std::vector<uint8_t>* body, int64_t timeout_ms);
  // Handshakes TLS on the connected socket within `timeout_ms`; nothing else is sent before.
  ClientError start_tls(const ClientOptions& options, int64_t timeout_ms);
  // Writes `bytes` to the socket, encrypted first when TLS.
  ClientError write_bytes(std::span<const uint8_t> bytes, int64_t timeout_ms);
  // Received bytes into the frame reader, decrypted first when TLS (sending what TLS answers).
  ClientError received(std::span<const uint8_t> bytes);

  int fd_ = -1;
  uint64_t next_request_id_ = 1;
  SessionInfo session_;
  FrameReader reader_{check_server_frame, {}};
  std::unique_ptr<TlsStream> tls_;   // null: plain TCP
  std::vector<uint8_t> tls_buf_;     // ciphertext to send, or plaintext just decrypted
};

class Client {
 public:
  explicit Client(ClientOptions options) : options_(std::move(options)) {}

  // Sends `events` (at most the server's events per frame) and waits for their results, in
  // order. Reconnects and resends on a broken connection or timeout, up to options.attempts.
  [[nodiscard]] ClientError submit(std::span<const Event> events, std::vector<WireResult>* results);
  [[nodiscard]] ClientError history(uint32_t program, uint64_t account, uint32_t limit, LogPos before,
                                    std::vector<HistoryEntry>* entries);
  [[nodiscard]] ClientError lookup(uint32_t program, const Ref128& ref, std::vector<HistoryEntry>* entries);
  // A member's lots as of now: pending and spendable points with their dates (program 0: the key's).
  [[nodiscard]] ClientError statement(uint32_t program, uint64_t account, StatementReply* out);
  // The key's program's totals and the server's log figures.
  [[nodiscard]] ClientError stats(StatsRecord* stats);
  // What the server is ("key=value" lines: role, epoch, primary for a follower, durable_lsn).
  [[nodiscard]] ClientError info(std::string* text);
  // Connects now (otherwise the first call does). Also tells the session info.
  [[nodiscard]] ClientError connect();
  const SessionInfo* session() const { return conn_ ? &conn_->session() : nullptr; }
  uint64_t reconnects() const { return reconnects_; }

 private:
  template <class Send>
  ClientError call(Send send, Reply* reply);

  ClientOptions options_;
  std::optional<Connection> conn_;
  uint64_t reconnects_ = 0;
};

class AsyncClient {
 public:
  // Called on the client's I/O thread with the event's result, or with an error when every
  // attempt failed.
  using Callback = std::function<void(const WireResult& result, const ClientError& error)>;
  struct Options {
    ClientOptions client;
    uint32_t batch_events_max = 1000;   // events per frame (capped at the server's limit)
    int64_t linger_us = 200;            // a partial batch leaves after this long
    uint32_t frames_in_flight_max = 64; // submit() waits beyond this
  };

  explicit AsyncClient(Options options);
  ~AsyncClient();  // flush(), then stops
  AsyncClient(const AsyncClient&) = delete;
  AsyncClient& operator=(const AsyncClient&) = delete;

  // Any thread. Waits while frames_in_flight_max frames are unanswered (backpressure).
  void submit(const Event& event, Callback callback);
  // Returns once every event submitted before the call has had its callback.
  void flush();
  uint64_t reconnects() const { return reconnects_.load(); }

 private:
  struct Frame {
    std::vector<Event> events;
    std::vector<Callback> callbacks;
    uint64_t request_id = 0;
    uint32_t attempts = 0;
    int64_t sent_ms = 0;
  };
  void io_main();
  bool ensure_connected();
  void fail_all(const ClientError& e);

  Options options_;
  std::mutex mu_;
  std::condition_variable cv_;        // I/O thread wakes for work; submitters for room
  std::condition_variable done_cv_;   // flush() waits
  Frame filling_;
  int64_t filling_since_us_ = 0;
  std::deque<Frame> to_send_;
  uint64_t submitted_ = 0, completed_ = 0;
  size_t in_flight_frames_ = 0;       // queued + sent, not yet answered
  bool stopping_ = false;
  int wake_fd_ = -1;                  // eventfd: wakes the I/O thread out of poll()
  std::optional<Connection> conn_;    // I/O thread only
  std::deque<Frame> sent_;            // I/O thread only: awaiting replies, in order
  std::atomic<uint64_t> reconnects_{0};
  std::thread io_;
};

}  // namespace tally::net
