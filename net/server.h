// Tally net: the TCP server (tallyd's network half), independent of the I/O back end.
//
//   accept ──▶ Session (one per connection, on its worker's thread): frames in, checks, auth,
//              events out to the ledger (LedgerService::submit), replies back in request order
//   ledger committer thread ──EffectListener──▶ ServerCore::complete: results into the request's
//              slot; a finished request goes to its worker's completion queue and wakes the worker
//
// Each worker is one thread with its own event loop (Boost.Asio or io_uring: net/backend.h), its
// own listening socket (SO_REUSEPORT) and its own producer index into the ledger, so a session
// and everything it touches belong to one thread. The only cross-thread paths are the request
// slots (written by the committer, read by the worker after an acquire of `remaining`), the
// completion queues (a mutex and a wake-up) and a few atomic counters.
//
// Limits (ServerLimits) bound everything a client can make the server hold: frame size, events
// per frame, connections, bytes in flight per connection (past it the socket is not read: TCP
// backpressure), a global memory budget, request slots per worker, per-program events in
// flight, and timeouts for the handshake, idle connections and half-sent frames.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/runtime/pipeline.h"
#include "engine/service.h"
#include "net/protocol.h"
#include "net/scram.h"
#include "net/tls.h"

namespace tally::net {

// An API key as the server holds it: never the secret, only its SCRAM verifier.
struct ApiKey {
  uint32_t id = 0;        // what the client names in the handshake (decimal)
  uint32_t program = 0;   // the one program it may act in
  Role role = Role::kPos;
  scram::Verifier verifier;
};

struct ServerLimits {
  FrameLimits frame;                          // body bytes and events per frame
  uint32_t connections_max = 1024;
  size_t connection_inflight_bytes_max = 16u << 20;  // requests not yet answered + unsent replies
  size_t memory_budget_bytes = 1u << 30;      // the same, summed over all connections
  uint32_t requests_inflight_max = 65536;     // per worker: request slots (events frames) in flight
  uint64_t program_inflight_events_max = 1'000'000;  // past it a frame's events are answered busy
  int64_t handshake_timeout_ms = 5'000;
  int64_t idle_timeout_ms = 300'000;
  int64_t frame_timeout_ms = 30'000;          // to finish a frame once its first byte arrived
  uint32_t auth_failures_per_minute_max = 10; // per peer address; then refused at connect
};

enum class BackendKind : uint8_t { kAsio, kUring };
std::string_view to_string(BackendKind b);

struct ServerConfig {
  std::string listen_host = "127.0.0.1";
  uint16_t port = 7411;  // 0: any free port (tests); Server::port() tells which
  uint16_t workers = 1;  // network threads; each is a ledger producer
  uint16_t first_producer = 0;  // the workers use producers first_producer .. + workers - 1
  BackendKind backend = BackendKind::kUring;
  ServerLimits limits;
  std::vector<ApiKey> keys;
  // Null: plain TCP. Otherwise every connection is TLS (net/tls.h), the frames inside unchanged.
  std::shared_ptr<TlsServerContext> tls;
  // Where failed handshakes and other notable events are reported (default: stderr).
  std::function<void(const std::string&)> log;
};

struct ServerStats {
  uint64_t connections_accepted = 0;
  uint64_t connections_refused = 0;
  uint64_t connections_open = 0;
  uint64_t frames_in = 0;
  uint64_t events_in = 0;
  uint64_t auth_failures = 0;
  uint64_t protocol_errors = 0;
  uint64_t busy_events = 0;
};

class ServerCore;
class Worker;

// What a back end's connection offers its Session.
class Transport {
 public:
  virtual ~Transport() = default;
  // The session has new output, or may read again: start whatever I/O is not already running.
  virtual void kick() = 0;
};

// One connection's protocol state. Back-end independent; owned by its worker's thread.
class Session {
 public:
  Session(ServerCore& core, Worker& worker, uint64_t id, std::string peer, Transport* transport, int64_t now_ms);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void on_bytes(std::span<const uint8_t> bytes);
  void on_eof();
  void on_tick(int64_t now_ms);
  void on_request_done(uint32_t slot);
  // The durable LSN advanced: a subscribed session sends what is new.
  void on_log_advanced();
  // Graceful stop: read nothing more; once every request received is answered, send
  // shutting_down and close.
  void begin_shutdown();
  // The log failed: answer what can be answered, then storage_failed and close.
  void begin_failure(const std::string& why);

  // Output: the back end takes everything pending at once (swapped into *buf, which must not be
  // in use), writes all of it, then reports the bytes sent. False when nothing is pending.
  bool take_output(std::vector<uint8_t>* buf);
  void sent(size_t n);
  // Whether the back end should have a read outstanding (false under backpressure or closing).
  bool want_read() const;
  // No more reads: close the socket once the output taken so far is sent.
  bool closing() const { return closing_; }
  bool has_output() const { return !out_.empty(); }
  uint64_t id() const { return id_; }
  size_t queued_replies() const { return queue_.size(); }

 private:
  enum class State : uint8_t { kAwaitStart, kAwaitFinish, kReady };
  enum class ItemKind : uint8_t { kEvents, kHistory, kLookup, kStats, kPong, kSubscribe, kInfo, kStatement };
  struct Item {
    ItemKind kind;
    uint64_t request_id;
    uint32_t slot;             // kEvents
    size_t bytes;              // frame bytes held for it (in-flight accounting)
    Query query;               // kHistory, kLookup
    std::vector<uint8_t> body; // kPong
    SubscribeRequest sub = {}; // kSubscribe
  };

  void handle(const FrameHeader& h, std::span<const uint8_t> body);
  void handle_auth_start(const FrameHeader& h, std::span<const uint8_t> body);
  void handle_auth_finish(const FrameHeader& h, std::span<const uint8_t> body);
  void handle_events(const FrameHeader& h, std::span<const uint8_t> body);
  void handle_query(const FrameHeader& h, std::span<const uint8_t> body, ItemKind kind);
  void handle_ack(const FrameHeader& h, std::span<const uint8_t> body);
  // At the front of the queue: decides the subscription, sends kSubscribed, starts the stream.
  void start_stream(const Item& it);
  // Sends log batches while the connection's window has room and the log has durable batches.
  void stream_fill();
  // Hands the acked LSN to the ledger as the consumer's durable cursor, if it moved.
  void write_cursor(bool now);
  bool key_still_valid();
  void pump();
  void write_reply(Item& it);
  // Sends what is ready in order, then `code`, and closes; nothing more is read.
  void fail(ErrorCode code, uint64_t request_id, const std::string& message);
  // Appends a frame to the output, counted in flight until sent.
  void emit(MsgType type, uint64_t request_id, std::span<const uint8_t> body, uint32_t records);
  // Drops every queued request: their answers will not be sent (the requests still apply).
  void drop_queue();
  void account(int64_t delta_bytes);
  // TLS: decrypts `bytes` into tls_plain_ and queues what the TLS layer produced (handshake
  // records, alerts). False when TLS failed: the connection is then closing.
  bool tls_in(std::span<const uint8_t> bytes);

  ServerCore& core_;
  Worker& worker_;
  uint64_t id_;
  std::string peer_;
  Transport* transport_;
  FrameReader reader_;
  State state_ = State::kAwaitStart;
  scram::ServerExchange scram_;
  std::optional<ApiKey> key_;
  uint64_t key_generation_ = 0;
  std::deque<Item> queue_;
  std::vector<uint8_t> out_;
  int64_t inflight_bytes_ = 0;  // counted into the core's memory budget too
  int64_t opened_ms_;
  int64_t last_frame_ms_;
  int64_t frame_begun_ms_ = 0;  // when the reader last went from empty to holding bytes
  bool closing_ = false;       // no more reads; close once the output is sent
  bool shutting_down_ = false; // close with shutting_down once the queue is empty
  bool eof_ = false;           // the client finished sending: close once the queue is empty
  std::string failure_;        // begin_failure's reason
  std::string user_name_;      // as the client named itself (for the log)
  uint32_t program_index_ = 0; // the key's quota counter
  std::vector<Event> scratch_events_;
  std::vector<uint32_t> scratch_positions_;
  std::vector<uint8_t> scratch_body_;
  std::unique_ptr<TlsStream> tls_;  // null: plain TCP
  std::vector<uint8_t> tls_plain_;  // on_bytes: what the last ciphertext decrypted to
  // The change stream (docs/protocol.md, "Subscribe"). Once a subscribe is received, only acks
  // and pings may follow; once it is answered, log batches flow from stream_next_ on.
  bool subscribe_received_ = false;
  bool streaming_ = false;
  bool stream_kick_ = false;
  std::string deferred_failure_;    // found inside pump(); fail() once it has finished
  uint64_t stream_request_id_ = 0;
  uint64_t stream_next_ = 0;        // the next LSN to send
  uint32_t stream_program_ = 0;     // 0: whole batches; else filtered to this program
  size_t stream_frame_bytes_ = 0;
  int64_t stream_last_send_ms_ = 0;
  std::string consumer_;            // the cursor's name (meta cursor.NAME); empty: unnamed
  bool sync_follower_ = false;      // its acks count for semi-synchronous acknowledgement
  uint64_t acked_ = 0;
  uint64_t cursor_written_ = 0;     // the cursor last handed to the ledger (written at most each second)
  int64_t cursor_written_ms_ = 0;
  std::vector<uint8_t> stream_buf_;
};

// A request slot: the results of one events frame, filled by the committer thread.
// Who frees it: the session once it has sent the reply, or the worker when the reply is ready
// and its session is gone. Both decisions are taken on the worker thread from `delivered`.
struct RequestSlot {
  std::atomic<uint32_t> remaining{0};  // engine results still to come
  bool delivered = false;              // worker thread: every result is in `results`
  uint64_t session = 0;                // 0: the session is gone
  uint32_t program_index = 0;          // quota counter it holds events of
  uint32_t engine_events = 0;
  std::vector<WireResult> results;
};

// One network thread's shared state: its request slots and completion queue.
class Worker {
 public:
  Worker(ServerCore& core, uint16_t index, uint16_t producer, uint32_t slots);

  uint16_t index() const { return index_; }
  uint16_t producer() const { return producer_; }
  // Worker thread: a free slot, or nullopt when all are in flight.
  std::optional<uint32_t> take_slot();
  void free_slot(uint32_t slot);
  // The slot's session is gone: free it now if its results are in, else when they arrive.
  void orphan_slot(uint32_t slot);
  RequestSlot& slot(uint32_t i) { return slots_[i]; }
  // Committer thread: these slots are complete.
  void post_done(std::span<const uint32_t> slots);
  // Worker thread: hands completed slots to their sessions (or frees orphans).
  void drain_done();

  void add_session(Session* s) { sessions_[s->id()] = s; }
  void remove_session(uint64_t id) { sessions_.erase(id); }
  template <class F>
  void for_each_session(F&& f) {
    for (auto& [id, s] : sessions_) f(*s);
  }
  size_t session_count() const { return sessions_.size(); }
  // Subscribed sessions on this worker, and whether the log advanced since they last looked.
  std::atomic<uint32_t> subscribers{0};
  std::atomic<bool> log_advanced{false};
  // Set by the back end before its loop starts: makes the loop call drain_done() soon. Any thread.
  std::function<void()> wake;

 private:
  ServerCore& core_;
  uint16_t index_;
  uint16_t producer_;
  std::unique_ptr<RequestSlot[]> slots_;
  std::vector<uint32_t> free_;
  std::mutex done_mu_;
  std::vector<uint32_t> done_;
  std::vector<uint32_t> draining_;
  std::unordered_map<uint64_t, Session*> sessions_;
};

// State shared by all workers; the ledger's EffectListener.
class ServerCore : public EffectListener {
 public:
  ServerCore(ServerConfig config, LedgerService* ledger);

  const ServerConfig& config() const { return config_; }
  const ServerLimits& limits() const { return config_.limits; }
  LedgerService& ledger() { return *ledger_; }
  ServerClock& clock() { return clock_; }
  Worker& worker(uint16_t i) { return *workers_[i]; }
  uint16_t worker_count() const { return static_cast<uint16_t>(workers_.size()); }

  // Keys: replaced whole (rotation, revocation); sessions of a key that is gone are closed at
  // their next frame. Any thread.
  void set_keys(std::vector<ApiKey> keys);
  std::optional<ApiKey> find_key(uint32_t id, uint64_t* generation) const;
  uint64_t key_generation() const { return key_generation_.load(std::memory_order_acquire); }
  const std::string& fake_salt_key() const { return fake_salt_key_; }

  // Accept path (worker threads): whether to take a new connection from `peer_address`; if not,
  // why (kTooManyConnections, kTooManyFailures).
  ErrorCode admit(const std::string& peer_address);
  void connection_closed();
  // Waits until at most `n` connections are open, at most `timeout_ms`; true if so.
  bool wait_open_at_most(uint32_t n, int64_t timeout_ms);
  void auth_failed(const std::string& peer_address, const std::string& what);

  // Per-program quota of events in flight. Index from program_index(); false when full.
  uint32_t program_index(uint32_t program);
  bool reserve_events(uint32_t program_index, uint64_t n);
  void release_events(uint32_t program_index, uint64_t n);

  std::atomic<int64_t>& memory_used() { return memory_used_; }
  bool over_budget() const {
    return memory_used_.load(std::memory_order_relaxed) >= static_cast<int64_t>(config_.limits.memory_budget_bytes);
  }

  // EffectListener (committer thread).
  void on_durable(std::span<const Effect> effects) override;
  void on_failed(std::span<const Effect> effects, const std::string& why) override;
  void on_log_advanced() override;
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  std::string failure() const;

  // Consumer names subscribed now (one connection per name). Any thread.
  bool claim_consumer(const std::string& name);
  void release_consumer(const std::string& name);
  void subscriber_added(int delta) { subscribers_.fetch_add(delta, std::memory_order_acq_rel); }

  void log(const std::string& line) const;
  ServerStats stats() const;
  struct Counters {
    std::atomic<uint64_t> accepted{0}, refused{0}, open{0}, frames{0}, events{0}, auth_failures{0},
        protocol_errors{0}, busy{0};
  };
  Counters& counters() { return counters_; }

  // Routing tags: which worker, slot and event index an effect answers.
  static uint64_t make_tag(uint16_t worker, uint32_t slot, uint32_t index) {
    return (uint64_t{slot} + 1) << 28 | uint64_t{worker} << 20 | index;
  }
  static constexpr uint32_t kTagIndexMax = (1u << 20) - 1;

 private:
  void complete(std::span<const Effect> effects, bool failed);

  ServerConfig config_;
  LedgerService* ledger_;
  ServerClock clock_;
  std::vector<std::unique_ptr<Worker>> workers_;

  mutable std::shared_mutex keys_mu_;
  std::unordered_map<uint32_t, ApiKey> keys_;
  std::atomic<uint64_t> key_generation_{1};
  std::string fake_salt_key_;

  std::mutex admit_mu_;
  std::unordered_map<std::string, std::deque<int64_t>> failures_;  // peer -> failure times (ms)
  std::atomic<uint32_t> open_{0};
  std::condition_variable closed_cv_;

  std::mutex programs_mu_;
  std::unordered_map<uint32_t, uint32_t> program_index_;
  std::unique_ptr<std::atomic<int64_t>[]> program_inflight_;
  static constexpr uint32_t kProgramsMax = 4096;
  uint32_t programs_used_ = 0;

  std::atomic<int64_t> memory_used_{0};
  std::mutex consumers_mu_;
  std::unordered_set<std::string> consumers_;
  std::atomic<int32_t> subscribers_{0};
  std::atomic<bool> failed_{false};
  mutable std::mutex failure_mu_;
  std::string failure_;
  Counters counters_;
  // Completed slots per worker, posted once per call. complete() runs on the committer thread,
  // or on a semi-synchronous primary's release thread (and on_failed on the committer's): the
  // mutex, uncontended in the common case, keeps the two apart.
  std::mutex complete_mu_;
  std::vector<std::vector<uint32_t>> done_scratch_;
};

}  // namespace tally::net
