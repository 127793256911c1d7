// The Boost.Asio back end: one io_context per worker thread, run by that thread alone.
//
// Asio never runs a completion handler inside the call that started the operation, so
// Connection::start_io() may be called from anywhere on the loop thread (including from inside a
// Session callback through Transport::kick) without re-entering a handler. A connection is
// deleted only from a posted handler, once no operation of it is outstanding.
// Boost 1.74's awaitable.hpp uses std::exchange without including <utility> (C++20, GCC 12).
#include <utility>

#include <boost/asio.hpp>

#include <array>
#include <unordered_set>

#include "net/backend.h"

namespace tally::net {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

class AsioLoop;

class Connection final : public Transport {
 public:
  Connection(AsioLoop& loop, tcp::socket socket, uint64_t id, std::string peer);
  void start() { start_io(); }
  void kick() override { start_io(); }
  Session& session() { return *session_; }
  void close_now();

 private:
  void start_io();
  void on_read(const error_code& ec, size_t n);
  void on_write(const error_code& ec, size_t n);

  AsioLoop& loop_;
  tcp::socket socket_;
  std::unique_ptr<Session> session_;
  std::array<uint8_t, kReadChunkBytes> buf_;
  std::vector<uint8_t> wbuf_;
  bool reading_ = false;
  bool writing_ = false;
  bool broken_ = false;     // the socket failed or we closed it: no more I/O is started
  bool closed_ = false;     // shut down and closed (cancelling whatever is outstanding)
  bool destroying_ = false; // a delete is posted
};

class AsioLoop final : public Loop {
 public:
  AsioLoop(ServerCore& core, Worker& worker, int listen_fd)
      : core_(core), worker_(worker), acceptor_(io_), timer_(io_) {
    error_code ec;
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    getsockname(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len);
    acceptor_.assign(ss.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), listen_fd, ec);
    if (ec) {
      ::close(listen_fd);  // ours from the call on, even when it fails
      throw std::runtime_error("asio: cannot adopt the listening socket: " + ec.message());
    }
    worker_.wake = [this] {
      // Coalesced: one posted drain however many completions arrive before it runs.
      if (!wake_posted_.exchange(true, std::memory_order_acq_rel))
        asio::post(io_, [this] {
          wake_posted_.store(false, std::memory_order_release);
          worker_.drain_done();
        });
    };
  }
  ~AsioLoop() override { worker_.wake = nullptr; }

  void run() override {
    accept();
    tick();
    io_.run();
    // Stopped: close what is left (the sessions' destructors release their slots).
    for (Connection* c : connections_) {
      c->close_now();
      delete c;
    }
    connections_.clear();
  }
  void post(std::function<void()> f) override { asio::post(io_, std::move(f)); }
  void stop_accepting() override {
    accepting_ = false;
    error_code ec;
    acceptor_.close(ec);
  }
  void stop() override { io_.stop(); }

  ServerCore& core() { return core_; }
  Worker& worker() { return worker_; }
  asio::io_context& io() { return io_; }
  void destroy(Connection* c) {
    connections_.erase(c);
    delete c;
  }

 private:
  void accept() {
    if (!accepting_) return;
    acceptor_.async_accept([this](const error_code& ec, tcp::socket s) {
      if (!accepting_) return;
      if (!ec) admit(std::move(s));
      accept();
    });
  }
  void admit(tcp::socket s) {
    std::string peer = peer_address(s.native_handle());
    ErrorCode refused = core_.admit(peer);
    if (refused != ErrorCode::kNone) {
      std::vector<uint8_t> f;
      append_frame(f, MsgType::kError, 0,
                   error_body(refused, refused == ErrorCode::kTooManyConnections
                                           ? "too many connections"
                                           : "too many failed handshakes from this address: try later"),
                   0);
      send_and_forget(s.native_handle(), f);
      return;  // the socket closes here
    }
    error_code ec;
    s.set_option(tcp::no_delay(true), ec);
    auto* c = new Connection(*this, std::move(s), ++next_id_, std::move(peer));
    connections_.insert(c);
    c->start();
  }
  void tick() {
    timer_.expires_after(std::chrono::milliseconds(kTickMs));
    timer_.async_wait([this](const error_code& ec) {
      if (ec) return;
      int64_t now = core_.clock().now_ms();
      worker_.for_each_session([now](Session& s) { s.on_tick(now); });
      tick();
    });
  }

  ServerCore& core_;
  Worker& worker_;
  asio::io_context io_{1};
  tcp::acceptor acceptor_;
  asio::steady_timer timer_;
  std::unordered_set<Connection*> connections_;
  std::atomic<bool> wake_posted_{false};
  bool accepting_ = true;
  uint64_t next_id_ = 0;
};

Connection::Connection(AsioLoop& loop, tcp::socket socket, uint64_t id, std::string peer)
    : loop_(loop), socket_(std::move(socket)) {
  // Session ids are unique per worker: the worker's index in the top bits.
  uint64_t sid = uint64_t{loop.worker().index()} << 56 | id;
  session_ = std::make_unique<Session>(loop.core(), loop.worker(), sid, std::move(peer), this,
                                       loop.core().clock().now_ms());
}

void Connection::close_now() {
  error_code ec;
  socket_.close(ec);
}

void Connection::start_io() {
  if (destroying_) return;
  if (!broken_ && !writing_ && session_->take_output(&wbuf_)) {
    writing_ = true;
    asio::async_write(socket_, asio::buffer(wbuf_),
                      [this](const error_code& ec, size_t n) { on_write(ec, n); });
  }
  if (!broken_ && !reading_ && session_->want_read()) {
    reading_ = true;
    socket_.async_read_some(asio::buffer(buf_), [this](const error_code& ec, size_t n) { on_read(ec, n); });
  }
  bool done = broken_ || (session_->closing() && !writing_ && !session_->has_output());
  if (done) {
    broken_ = true;
    if (!closed_) {
      closed_ = true;
      error_code ec;
      socket_.shutdown(tcp::socket::shutdown_both, ec);
      socket_.close(ec);  // cancels an outstanding read
    }
    if (!reading_ && !writing_) {
      destroying_ = true;
      asio::post(loop_.io(), [loop = &loop_, c = this] { loop->destroy(c); });
    }
  }
}

void Connection::on_read(const error_code& ec, size_t n) {
  reading_ = false;
  if (ec == asio::error::eof) {
    session_->on_eof();
  } else if (ec) {
    broken_ = true;
  } else {
    session_->on_bytes({buf_.data(), n});
  }
  start_io();
}

void Connection::on_write(const error_code& ec, size_t n) {
  writing_ = false;
  // Broken first: sent() may queue more output (a subscriber's next batches) and kick, which
  // must not start a write on a socket that has failed.
  if (ec) broken_ = true;
  session_->sent(n);
  start_io();
}

}  // namespace

std::unique_ptr<Loop> make_asio_loop(ServerCore& core, Worker& worker, int listen_fd) {
  return std::make_unique<AsioLoop>(core, worker, listen_fd);
}

}  // namespace tally::net
