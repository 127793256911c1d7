// The io_uring back end (liburing): one ring per worker, created by make_uring_loop and driven by
// run() on the worker's thread alone. It behaves like net/asio_loop.cpp, which is the reference.
//
// Ownership: the loop owns its ring, its eventfd, the listening socket and every Connection; a
// Connection owns its socket, its Session and its two buffers. Threads: everything here runs on
// the loop's thread except post(), stop() and Worker::wake, which touch only the posted queue
// (under a mutex), two atomics and the eventfd.
//
// Every operation in flight is named by its CQE's user_data: a Connection pointer with the
// operation in the low three bits, or the operation alone for the loop's own (accept, the eventfd
// read, the tick timeout, cancels). Lifetime rules, which keep the kernel away from freed memory
// and reused fd numbers:
//   - A Connection is deleted only once it has no SQE outstanding (recv, send or cancel: counted
//     from io_uring_get_sqe, since a prepared SQE will be submitted and complete), and only at
//     the end of a loop iteration, never from inside a Session callback.
//   - An fd is closed only once no SQE naming it can still be submitted: the socket when its
//     Connection is deleted (shutdown() ends the conversation before that), the listening socket
//     when its accept has completed. Otherwise a queued SQE could reach whatever the number is
//     reused for.
//   - Transport::kick() only queues SQEs; completions are handled by run() alone, so a Session
//     callback is never re-entered (as with Asio, which never completes inside the initiating
//     call).
//   - run() cancels everything and waits for every CQE before deleting the connections.
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <unordered_set>
#include <vector>

#include "net/backend.h"

namespace tally::net {
namespace {

constexpr unsigned kRingEntries = 4096;  // SQ entries; halved on ENOMEM (old kernels' memlock)
constexpr unsigned kRingEntriesMin = 64;
constexpr unsigned kCqPerSq = 4;        // CQ slack: each connection has up to 3 ops in flight
constexpr unsigned kCqeBatch = 256;     // CQEs handled per loop iteration
constexpr int kSqeAttempts = 16;        // submits tried to make room in a full SQ
constexpr int64_t kTeardownMs = 5'000;  // run()'s wait for cancelled operations to complete

// The low bits of user_data. Connections are at least 8-aligned (static_assert below).
enum Op : uint64_t {
  kRecv = 1,
  kSend = 2,
  kCancel = 3,  // a Connection's cancel of its recv or send
  kAccept = 4,  // the loop's own, with no pointer
  kWakeRead = 5,
  kTick = 6,
  kLoopCancel = 7,
};
constexpr uint64_t kOpMask = 7;

std::string errno_text(int e) {
  return std::system_category().message(e);
}

class UringLoop;

class Connection final : public Transport {
 public:
  Connection(UringLoop& loop, int fd, uint64_t id, std::string peer);
  ~Connection() override;
  void start() { start_io(); }
  void kick() override { start_io(); }
  void on_cqe(Op op, int res);
  // Teardown: end the conversation and cancel whatever is outstanding.
  void abort();
  bool idle() const { return inflight_ == 0; }
  // Teardown gave up waiting for this connection's CQEs: release the Session (its slots and
  // accounting) and the socket, and leave the buffers to the kernel.
  void abandon();

 private:
  uint64_t tag(Op op) const { return reinterpret_cast<uintptr_t>(this) | op; }
  void start_io();
  void arm_recv();
  void arm_send();
  void cancel(Op op);
  void on_recv(int res);
  void on_send(int res);

  UringLoop& loop_;
  int fd_;
  std::unique_ptr<Session> session_;
  std::vector<uint8_t> wbuf_;
  size_t woff_ = 0;          // bytes of wbuf_ sent
  int inflight_ = 0;         // SQEs of ours whose CQE has not been handled
  bool reading_ = false;     // a recv is outstanding or its completion is being handled
  bool writing_ = false;     // wbuf_ is being sent
  bool recv_armed_ = false;  // a recv SQE is outstanding
  bool send_armed_ = false;  // a send SQE is outstanding
  bool broken_ = false;      // the socket failed or we are closing it: no more I/O
  bool shut_ = false;        // shutdown() done and outstanding operations cancelled
  bool doomed_ = false;      // handed to the loop for deletion
  std::array<uint8_t, kReadChunkBytes> buf_;
};
static_assert(alignof(Connection) >= 8, "user_data keeps the operation in the low 3 bits");

class UringLoop final : public Loop {
 public:
  UringLoop(ServerCore& core, Worker& worker, int listen_fd);
  ~UringLoop() override;

  void run() override;
  void post(std::function<void()> f) override;
  void stop_accepting() override;
  void stop() override {
    stop_.store(true, std::memory_order_release);
    wake_ring();
  }

  ServerCore& core() { return core_; }
  Worker& worker() { return worker_; }
  bool tearing_down() const { return tearing_down_; }
  // An SQE counted as in flight (it must be prepared and will complete), or null when the SQ
  // stays full or the ring refuses submissions: the caller treats that as a failed operation.
  io_uring_sqe* sqe();
  // Deleted at the end of this loop iteration.
  void doom(Connection* c) { doomed_.push_back(c); }
  void log(const std::string& what) { core_.log("tallyd: io_uring: " + what); }

 private:
  void arm_accept();
  void arm_wake();
  void arm_tick();
  void cancel_loop_op(Op target);
  // Handles up to kCqeBatch ready CQEs; false when there were none.
  bool reap_cqes();
  void dispatch(uint64_t user_data, int res);
  void on_accept(int res);
  void on_wake(int res);
  void on_tick();
  void admit(int fd);
  void run_posted();
  void free_doomed();
  void teardown();
  void close_listener();
  // Any thread: makes the eventfd read complete.
  void wake_ring();

  ServerCore& core_;
  Worker& worker_;
  io_uring ring_{};
  int listen_fd_;
  int event_fd_ = -1;
  uint64_t wake_buf_ = 0;  // the eventfd read's target
  __kernel_timespec tick_ts_{};
  size_t inflight_ = 0;  // every SQE taken whose CQE has not been handled
  bool accepting_ = true;
  bool accept_armed_ = false;
  bool accept_retry_ = false;  // re-arm the accept at the next tick (after a hard error)
  int last_accept_error_ = 0;  // logged once until an accept succeeds
  bool wake_armed_ = false;
  bool tick_armed_ = false;
  bool tearing_down_ = false;
  bool enter_error_logged_ = false;
  std::unordered_set<Connection*> connections_;
  std::vector<Connection*> doomed_;
  uint64_t next_id_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> drain_pending_{false};  // Worker::wake has asked for a drain_done()
  std::mutex post_mu_;
  std::vector<std::function<void()>> posted_;  // under post_mu_
  std::vector<std::function<void()>> running_;
};

// ---- UringLoop ----------------------------------------------------------------------------------

UringLoop::UringLoop(ServerCore& core, Worker& worker, int listen_fd)
    : core_(core), worker_(worker), listen_fd_(listen_fd) {
  // Blocking fds throughout: io_uring waits by polling the file and retrying, but an O_NONBLOCK
  // file can have an operation complete with -EAGAIN instead (liburing issue #364).
  int fl = fcntl(listen_fd_, F_GETFL);
  if (fl >= 0 && (fl & O_NONBLOCK)) fcntl(listen_fd_, F_SETFL, fl & ~O_NONBLOCK);
  event_fd_ = eventfd(0, EFD_CLOEXEC);
  if (event_fd_ < 0) {
    int e = errno;
    close(listen_fd_);
    throw std::runtime_error("io_uring back end: eventfd: " + errno_text(e));
  }
  int rc = -ENOMEM;
  for (unsigned n = kRingEntries; n >= kRingEntriesMin; n /= 2) {
    io_uring_params p{};
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
    p.cq_entries = n * kCqPerSq;
    rc = io_uring_queue_init_params(n, &ring_, &p);
    if (rc != -ENOMEM) break;
  }
  if (rc < 0) {
    close(event_fd_);
    close(listen_fd_);
    throw std::runtime_error("io_uring back end: io_uring_setup: " + errno_text(-rc));
  }
  tick_ts_.tv_sec = kTickMs / 1000;
  tick_ts_.tv_nsec = (kTickMs % 1000) * 1'000'000;
  worker_.wake = [this] {
    // Coalesced: one eventfd write however many completions arrive before the loop drains.
    if (!drain_pending_.exchange(true, std::memory_order_acq_rel)) wake_ring();
  };
}

UringLoop::~UringLoop() {
  worker_.wake = nullptr;
  // run() has waited for every CQE (or never started), so nothing is left for the kernel to write.
  io_uring_queue_exit(&ring_);
  close(event_fd_);
  close_listener();
}

void UringLoop::run() {
  arm_accept();
  arm_wake();
  arm_tick();
  while (!stop_.load(std::memory_order_acquire)) {
    int rc = io_uring_submit_and_wait(&ring_, 1);
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY && rc != -ETIME &&
        !enter_error_logged_) {
      enter_error_logged_ = true;
      log("io_uring_enter: " + errno_text(-rc));
    }
    reap_cqes();
    run_posted();
    // Cleared (by an RMW, which orders it against the waker's) before draining: a completion
    // posted during the drain wakes the loop again.
    if (drain_pending_.load(std::memory_order_relaxed) &&
        drain_pending_.exchange(false, std::memory_order_acq_rel))
      worker_.drain_done();
    free_doomed();
    // Re-armed here if an SQE shortage kept their completion handlers from doing it.
    if (!wake_armed_) arm_wake();
    if (!tick_armed_) arm_tick();
  }
  teardown();
}

void UringLoop::post(std::function<void()> f) {
  bool first;
  {
    std::lock_guard lock(post_mu_);
    first = posted_.empty();
    posted_.push_back(std::move(f));
  }
  // Later posts find the queue non-empty: the loop takes them with this one.
  if (first) wake_ring();
}

void UringLoop::stop_accepting() {
  if (!accepting_) return;
  accepting_ = false;
  accept_retry_ = false;
  if (listen_fd_ < 0) return;
  // Refuses new connections now (and resets the backlog), as closing it would; the fd itself
  // closes once the accept has completed.
  shutdown(listen_fd_, SHUT_RDWR);
  if (accept_armed_) {
    cancel_loop_op(kAccept);
  } else {
    close_listener();
  }
}

io_uring_sqe* UringLoop::sqe() {
  for (int i = 0; i < kSqeAttempts; ++i) {
    if (io_uring_sqe* s = io_uring_get_sqe(&ring_)) {
      ++inflight_;
      return s;
    }
    // The SQ is full: hand it to the kernel now. Nothing completes here: CQEs wait for run().
    int rc = io_uring_submit(&ring_);
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
      log("io_uring_submit: " + errno_text(-rc));
      return nullptr;
    }
  }
  log("the submission queue stays full");
  return nullptr;
}

void UringLoop::arm_accept() {
  if (!accepting_ || accept_armed_ || listen_fd_ < 0) return;
  io_uring_sqe* s = sqe();
  if (s == nullptr) {
    accept_retry_ = true;
    return;
  }
  // Accepted sockets are blocking (see the constructor) and close on exec.
  io_uring_prep_accept(s, listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(s, kAccept);
  accept_armed_ = true;
}

void UringLoop::arm_wake() {
  if (wake_armed_ || tearing_down_) return;
  io_uring_sqe* s = sqe();
  if (s == nullptr) return;  // run() tries again next iteration
  io_uring_prep_read(s, event_fd_, &wake_buf_, sizeof wake_buf_, 0);
  io_uring_sqe_set_data64(s, kWakeRead);
  wake_armed_ = true;
}

void UringLoop::arm_tick() {
  if (tick_armed_ || tearing_down_) return;
  io_uring_sqe* s = sqe();
  if (s == nullptr) return;  // run() tries again next iteration
  // A pure timeout (count 0): completes with -ETIME after kTickMs. The kernel copies tick_ts_.
  io_uring_prep_timeout(s, &tick_ts_, 0, 0);
  io_uring_sqe_set_data64(s, kTick);
  tick_armed_ = true;
}

void UringLoop::cancel_loop_op(Op target) {
  io_uring_sqe* s = sqe();
  if (s == nullptr) return;  // the accept ends anyway (its socket is shut down), so does the tick
  io_uring_prep_cancel64(s, target, 0);
  io_uring_sqe_set_data64(s, kLoopCancel);
}

bool UringLoop::reap_cqes() {
  std::array<io_uring_cqe*, kCqeBatch> cqes;
  unsigned n = io_uring_peek_batch_cqe(&ring_, cqes.data(), kCqeBatch);
  if (n == 0) return false;
  // Copied out and released first: handlers queue SQEs, and the CQ slots are better free for
  // their completions than held while the handlers run.
  std::array<std::pair<uint64_t, int>, kCqeBatch> done;
  for (unsigned i = 0; i < n; ++i) done[i] = {cqes[i]->user_data, cqes[i]->res};
  io_uring_cq_advance(&ring_, n);
  for (unsigned i = 0; i < n; ++i) dispatch(done[i].first, done[i].second);
  return true;
}

void UringLoop::dispatch(uint64_t user_data, int res) {
  --inflight_;
  Op op = static_cast<Op>(user_data & kOpMask);
  if (auto* c = reinterpret_cast<Connection*>(user_data & ~kOpMask)) {
    c->on_cqe(op, res);
    return;
  }
  switch (op) {
    case kAccept:
      return on_accept(res);
    case kWakeRead:
      return on_wake(res);
    case kTick:
      return on_tick();
    default:
      return;  // kLoopCancel: the cancelled operation reports for itself
  }
}

void UringLoop::on_accept(int res) {
  accept_armed_ = false;
  if (res >= 0) {
    last_accept_error_ = 0;
    if (accepting_) {
      admit(res);
    } else {
      close(res);  // accepted just before the cancel took effect
    }
  } else if (accepting_) {
    switch (-res) {
      // What accept(2) says to treat like EAGAIN: a connection that went away, a network error.
      case EINTR:
      case EAGAIN:
      case ECONNABORTED:
      case EPROTO:
      case EPERM:
      case ENETDOWN:
      case ENOPROTOOPT:
      case EHOSTDOWN:
      case ENONET:
      case EHOSTUNREACH:
      case EOPNOTSUPP:
      case ENETUNREACH:
        break;
      default:
        // EMFILE, ENFILE, ENOBUFS, ENOMEM...: retrying at once would spin; wait for a tick.
        if (-res != last_accept_error_) log("accept: " + errno_text(-res) + " (retrying)");
        last_accept_error_ = -res;
        accept_retry_ = true;
        break;
    }
  }
  if (!accepting_) return close_listener();
  if (!accept_retry_) arm_accept();
}

void UringLoop::on_wake(int res) {
  wake_armed_ = false;
  if (tearing_down_) return;
  // Whatever woke us (posts, a drain, stop) is looked at by run() after this batch.
  if (res < 0 && res != -EINTR && res != -EAGAIN) log("eventfd read: " + errno_text(-res));
  arm_wake();
}

void UringLoop::on_tick() {
  tick_armed_ = false;
  if (tearing_down_) return;
  int64_t now = core_.clock().now_ms();
  worker_.for_each_session([now](Session& s) { s.on_tick(now); });
  if (accept_retry_) {
    accept_retry_ = false;
    arm_accept();
  }
  arm_tick();
}

void UringLoop::admit(int fd) {
  std::string peer = peer_address(fd);
  ErrorCode refused = core_.admit(peer);
  if (refused != ErrorCode::kNone) {
    std::vector<uint8_t> f;
    append_frame(
        f, MsgType::kError, 0,
        error_body(refused, refused == ErrorCode::kTooManyConnections
                                ? "too many connections"
                                : "too many failed handshakes from this address: try later"),
        0);
    send_and_forget(fd, f);
    close(fd);
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  auto* c = new Connection(*this, fd, ++next_id_, std::move(peer));
  connections_.insert(c);
  c->start();
}

void UringLoop::run_posted() {
  {
    std::lock_guard lock(post_mu_);
    if (posted_.empty()) return;
    running_.swap(posted_);
  }
  for (auto& f : running_) f();
  running_.clear();
}

void UringLoop::free_doomed() {
  for (Connection* c : doomed_) {
    connections_.erase(c);
    delete c;  // its Session's destructor releases its slots
  }
  doomed_.clear();
}

void UringLoop::teardown() {
  // Like io_context::stop(): no handler runs any more, connections are closed and deleted. The
  // kernel may still write into a connection's buffer, so every operation is cancelled and its
  // CQE awaited first.
  tearing_down_ = true;
  stop_accepting();  // if not done already; the listener closes once its accept has completed
  if (wake_armed_) {
    cancel_loop_op(kWakeRead);
    wake_ring();  // completes the read even if no SQE was left for the cancel
  }
  if (tick_armed_) cancel_loop_op(kTick);
  for (Connection* c : connections_) c->abort();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kTeardownMs);
  while (inflight_ > 0 && std::chrono::steady_clock::now() < deadline) {
    __kernel_timespec ts{0, kTickMs * 1'000'000};
    io_uring_cqe* cqe = nullptr;
    io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
    while (reap_cqes()) {
    }
  }
  if (inflight_ > 0)
    log(std::to_string(inflight_) + " operations did not end; leaking their buffers");
  for (Connection* c : connections_) {
    if (c->idle()) {
      delete c;
    } else {
      c->abandon();
    }
  }
  connections_.clear();
  doomed_.clear();
  close_listener();
}

void UringLoop::close_listener() {
  if (listen_fd_ < 0) return;
  close(listen_fd_);
  listen_fd_ = -1;
}

void UringLoop::wake_ring() {
  uint64_t one = 1;
  while (write(event_fd_, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

// ---- Connection ---------------------------------------------------------------------------------

Connection::Connection(UringLoop& loop, int fd, uint64_t id, std::string peer)
    : loop_(loop), fd_(fd) {
  // Session ids are unique per worker: the worker's index in the top bits.
  uint64_t sid = uint64_t{loop.worker().index()} << 56 | id;
  session_ = std::make_unique<Session>(loop.core(), loop.worker(), sid, std::move(peer), this,
                                       loop.core().clock().now_ms());
}

Connection::~Connection() {
  session_.reset();
  close(fd_);
}

void Connection::abandon() {
  session_.reset();
  close(fd_);
  fd_ = -1;
}

void Connection::start_io() {
  if (doomed_) return;
  if (!broken_ && !writing_ && session_->take_output(&wbuf_)) {
    writing_ = true;
    woff_ = 0;
    arm_send();
    if (!send_armed_) writing_ = false;
  }
  if (!broken_ && !reading_ && session_->want_read()) {
    reading_ = true;
    arm_recv();
    if (!recv_armed_) reading_ = false;
  }
  bool done = broken_ || (session_->closing() && !writing_ && !session_->has_output());
  if (!done) return;
  if (!shut_) {
    shut_ = true;
    broken_ = true;
    // The peer sees the end now; the fd closes with the Connection, once nothing can name it.
    shutdown(fd_, SHUT_RDWR);
    if (recv_armed_) cancel(kRecv);
    if (send_armed_) cancel(kSend);
  }
  if (inflight_ == 0) {
    doomed_ = true;
    loop_.doom(this);
  }
}

void Connection::arm_recv() {
  io_uring_sqe* s = loop_.sqe();
  if (s == nullptr) {
    broken_ = true;
    return;
  }
  io_uring_prep_recv(s, fd_, buf_.data(), buf_.size(), 0);
  io_uring_sqe_set_data64(s, tag(kRecv));
  recv_armed_ = true;
  ++inflight_;
}

void Connection::arm_send() {
  io_uring_sqe* s = loop_.sqe();
  if (s == nullptr) {
    broken_ = true;
    return;
  }
  io_uring_prep_send(s, fd_, wbuf_.data() + woff_, wbuf_.size() - woff_, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(s, tag(kSend));
  send_armed_ = true;
  ++inflight_;
}

void Connection::cancel(Op op) {
  io_uring_sqe* s = loop_.sqe();
  if (s == nullptr) return;  // shutdown() alone makes the operation complete
  io_uring_prep_cancel64(s, tag(op), 0);
  // Counted like the others: the connection outlives its cancel, so the user_data it names
  // cannot belong to a new connection at the same address.
  io_uring_sqe_set_data64(s, tag(kCancel));
  ++inflight_;
}

void Connection::abort() {
  if (!shut_) {
    shut_ = true;
    broken_ = true;
    shutdown(fd_, SHUT_RDWR);
  }
  if (recv_armed_) cancel(kRecv);
  if (send_armed_) cancel(kSend);
}

void Connection::on_cqe(Op op, int res) {
  --inflight_;
  if (op == kRecv) recv_armed_ = false;
  if (op == kSend) send_armed_ = false;
  if (loop_.tearing_down()) return;
  switch (op) {
    case kRecv:
      return on_recv(res);
    case kSend:
      return on_send(res);
    default:
      return start_io();  // a cancel: the connection may be free to go now
  }
}

void Connection::on_recv(int res) {
  // reading_ stays set while the Session looks at buf_, so a kick from inside on_bytes cannot
  // queue a recv into it (a full SQ is submitted at once, and the kernel could write to it).
  if (!broken_) {
    if (res > 0) {
      session_->on_bytes({buf_.data(), static_cast<size_t>(res)});
    } else if (res == 0) {
      session_->on_eof();
    } else if (res != -EINTR && res != -EAGAIN) {
      broken_ = true;  // -ECONNRESET and the like; -ECANCELED only comes after shut_
    }
  }
  reading_ = false;
  start_io();
}

void Connection::on_send(int res) {
  if (res > 0) {
    session_->sent(static_cast<size_t>(res));
    woff_ += static_cast<size_t>(res);
  } else if (res != -EINTR && res != -EAGAIN) {
    broken_ = true;  // -EPIPE, -ECONNRESET, -ECANCELED; 0 for a non-empty buffer would spin
  }
  if (!broken_ && woff_ < wbuf_.size()) {
    // A short send: the rest goes before anything else, like async_write.
    arm_send();
    if (send_armed_) return;
  }
  writing_ = false;
  start_io();
}

// What the loop needs beyond a ring: the operations it uses, and io_uring_enter itself (a seccomp
// filter may allow the setup and refuse the rest). Empty when all is well.
std::string probe(io_uring* ring) {
  // io_uring_get_probe_ring() as liburing 2.3 does it, but keeping the error to report it.
  constexpr unsigned kProbeOps = 256;
  std::vector<uint8_t> mem(sizeof(io_uring_probe) + kProbeOps * sizeof(io_uring_probe_op));
  auto* p = reinterpret_cast<io_uring_probe*>(mem.data());
  int rc = io_uring_register_probe(ring, p, kProbeOps);
  if (rc == -EINVAL) return "io_uring_register(IORING_REGISTER_PROBE): the kernel predates 5.6";
  if (rc < 0) return "io_uring_register(IORING_REGISTER_PROBE): " + errno_text(-rc);
  struct Needed {
    int op;
    const char* name;
  };
  static constexpr Needed kNeeded[] = {
      {IORING_OP_ACCEPT, "ACCEPT"},   {IORING_OP_RECV, "RECV"},
      {IORING_OP_SEND, "SEND"},       {IORING_OP_READ, "READ"},
      {IORING_OP_TIMEOUT, "TIMEOUT"}, {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
  };
  std::string missing;
  for (const Needed& n : kNeeded) {
    if (io_uring_opcode_supported(p, n.op)) continue;
    missing += (missing.empty() ? "IORING_OP_" : ", IORING_OP_") + std::string(n.name);
  }
  if (!missing.empty()) return "the kernel does not support " + missing;
  io_uring_sqe* s = io_uring_get_sqe(ring);
  io_uring_prep_nop(s);
  rc = io_uring_submit_and_wait(ring, 1);
  if (rc < 0) return "io_uring_enter: " + errno_text(-rc);
  io_uring_cqe* cqe = nullptr;
  if (io_uring_peek_cqe(ring, &cqe) != 0 || cqe == nullptr)
    return "io_uring: a NOP did not complete";
  io_uring_cqe_seen(ring, cqe);
  return {};
}

}  // namespace

bool uring_available(std::string* why_not) {
  std::string why;
  io_uring ring{};
  int rc = io_uring_queue_init(8, &ring, 0);
  if (rc < 0) {
    why = "io_uring_setup: " + errno_text(-rc);
    if (rc == -EPERM) why += " (a seccomp filter or kernel.io_uring_disabled)";
    if (rc == -ENOSYS) why += " (a kernel without io_uring, or a seccomp filter)";
    if (rc == -ENOMEM) why += " (RLIMIT_MEMLOCK too low for a ring on this kernel)";
  } else {
    why = probe(&ring);
    io_uring_queue_exit(&ring);
  }
  if (why_not != nullptr) *why_not = why;
  return why.empty();
}

std::unique_ptr<Loop> make_uring_loop(ServerCore& core, Worker& worker, int listen_fd) {
  return std::make_unique<UringLoop>(core, worker, listen_fd);
}

}  // namespace tally::net
