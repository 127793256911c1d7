#include "net/server.h"

#include <openssl/rand.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

// Sections: ServerCore (keys, admission, quotas, completions); Worker (slots, completion queue);
// Session (frames, handshake, events, queries, ordered replies, limits).

namespace tally::net {

std::string_view to_string(BackendKind b) { return b == BackendKind::kAsio ? "asio" : "io_uring"; }

// ---- ServerCore ---------------------------------------------------------------------------------

ServerCore::ServerCore(ServerConfig config, LedgerService* ledger)
    : config_(std::move(config)), ledger_(ledger), program_inflight_(new std::atomic<int64_t>[kProgramsMax]) {
  if (config_.workers == 0 || config_.workers > 255) throw std::invalid_argument("workers must be 1..255");
  if (config_.limits.frame.events_per_frame_max == 0 ||
      config_.limits.frame.events_per_frame_max > kTagIndexMax)
    throw std::invalid_argument("events_per_frame_max must be 1.." + std::to_string(kTagIndexMax));
  for (uint32_t i = 0; i < kProgramsMax; ++i) program_inflight_[i].store(0, std::memory_order_relaxed);
  for (uint16_t w = 0; w < config_.workers; ++w)
    workers_.push_back(std::make_unique<Worker>(*this, w, static_cast<uint16_t>(config_.first_producer + w),
                                                config_.limits.requests_inflight_max));
  done_scratch_.resize(config_.workers);
  set_keys(config_.keys);
  // Fake salts for unknown keys derive from this: stable while the server runs, unguessable.
  uint8_t r[32];
  if (RAND_bytes(r, sizeof r) != 1) throw std::runtime_error("RAND_bytes failed");
  fake_salt_key_.assign(reinterpret_cast<const char*>(r), sizeof r);
}

void ServerCore::set_keys(std::vector<ApiKey> keys) {
  std::unordered_map<uint32_t, ApiKey> m;
  for (ApiKey& k : keys) m[k.id] = std::move(k);
  std::unique_lock lock(keys_mu_);
  keys_ = std::move(m);
  key_generation_.fetch_add(1, std::memory_order_acq_rel);
}

std::optional<ApiKey> ServerCore::find_key(uint32_t id, uint64_t* generation) const {
  std::shared_lock lock(keys_mu_);
  if (generation) *generation = key_generation_.load(std::memory_order_acquire);
  auto it = keys_.find(id);
  if (it == keys_.end()) return std::nullopt;
  return it->second;
}

ErrorCode ServerCore::admit(const std::string& peer) {
  std::lock_guard lock(admit_mu_);
  if (open_.load() >= config_.limits.connections_max) {
    counters_.refused.fetch_add(1, std::memory_order_relaxed);
    return ErrorCode::kTooManyConnections;
  }
  auto it = failures_.find(peer);
  if (it != failures_.end()) {
    int64_t now = clock_.now_ms();
    while (!it->second.empty() && it->second.front() <= now - kMsPerMinute) it->second.pop_front();
    if (it->second.empty()) {
      failures_.erase(it);
    } else if (it->second.size() >= config_.limits.auth_failures_per_minute_max) {
      counters_.refused.fetch_add(1, std::memory_order_relaxed);
      return ErrorCode::kTooManyFailures;
    }
  }
  open_.fetch_add(1);
  counters_.accepted.fetch_add(1, std::memory_order_relaxed);
  counters_.open.fetch_add(1, std::memory_order_relaxed);
  return ErrorCode::kNone;
}

void ServerCore::connection_closed() {
  {
    std::lock_guard lock(admit_mu_);
    open_.fetch_sub(1);
  }
  counters_.open.fetch_sub(1, std::memory_order_relaxed);
  closed_cv_.notify_all();
}

bool ServerCore::wait_open_at_most(uint32_t n, int64_t timeout_ms) {
  std::unique_lock lock(admit_mu_);
  return closed_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return open_.load() <= n; });
}

void ServerCore::auth_failed(const std::string& peer, const std::string& what) {
  counters_.auth_failures.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard lock(admit_mu_);
    // Bounded: a flood from many addresses keeps at most this many entries.
    if (failures_.size() < 100'000 || failures_.count(peer)) {
      std::deque<int64_t>& d = failures_[peer];
      d.push_back(clock_.now_ms());
      if (d.size() > config_.limits.auth_failures_per_minute_max) d.pop_front();
    }
  }
  log("tallyd: failed handshake from " + peer + ": " + what);
}

uint32_t ServerCore::program_index(uint32_t program) {
  std::lock_guard lock(programs_mu_);
  auto [it, inserted] = program_index_.try_emplace(program, programs_used_);
  if (inserted) {
    if (programs_used_ == kProgramsMax - 1) {
      it->second = kProgramsMax - 1;  // the rest share the last counter
    } else {
      ++programs_used_;
    }
  }
  return it->second;
}

bool ServerCore::reserve_events(uint32_t index, uint64_t n) {
  auto& c = program_inflight_[index];
  int64_t now = c.fetch_add(static_cast<int64_t>(n), std::memory_order_relaxed) + static_cast<int64_t>(n);
  if (now > static_cast<int64_t>(config_.limits.program_inflight_events_max)) {
    c.fetch_sub(static_cast<int64_t>(n), std::memory_order_relaxed);
    return false;
  }
  return true;
}

void ServerCore::release_events(uint32_t index, uint64_t n) {
  program_inflight_[index].fetch_sub(static_cast<int64_t>(n), std::memory_order_relaxed);
}

void ServerCore::on_durable(std::span<const Effect> effects) {
  complete(effects, false);
  on_log_advanced();
}

void ServerCore::on_log_advanced() {
  if (subscribers_.load(std::memory_order_acquire) == 0) return;
  for (auto& w : workers_) {
    if (w->subscribers.load(std::memory_order_acquire) == 0) continue;
    w->log_advanced.store(true, std::memory_order_release);
    if (w->wake) w->wake();
  }
}

bool ServerCore::claim_consumer(const std::string& name) {
  std::lock_guard lock(consumers_mu_);
  return consumers_.insert(name).second;
}

void ServerCore::release_consumer(const std::string& name) {
  std::lock_guard lock(consumers_mu_);
  consumers_.erase(name);
}

void ServerCore::on_failed(std::span<const Effect> effects, const std::string& why) {
  {
    std::lock_guard lock(failure_mu_);
    if (failure_.empty()) failure_ = why;
  }
  failed_.store(true, std::memory_order_release);
  complete(effects, true);
}

std::string ServerCore::failure() const {
  std::lock_guard lock(failure_mu_);
  return failure_;
}

// The committer thread: each tagged effect's result into its slot; finished slots to their
// workers, one post per worker per call.
void ServerCore::complete(std::span<const Effect> effects, bool failed) {
  if (effects.empty()) return;
  std::lock_guard lock(complete_mu_);
  for (const Effect& f : effects) {
    uint64_t tag = f.event.tag;
    if (tag == 0 || is_internal(f.event.kind)) continue;
    uint32_t index = static_cast<uint32_t>(tag & kTagIndexMax);
    uint16_t w = static_cast<uint16_t>((tag >> 20) & 0xff);
    uint32_t slot = static_cast<uint32_t>((tag >> 28) - 1);
    Worker& worker = *workers_[w];
    RequestSlot& s = worker.slot(slot);
    s.results[index] = failed ? wire_result(Result::kStorageFailed) : wire_result(f);
    if (s.remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      release_events(s.program_index, s.engine_events);
      done_scratch_[w].push_back(slot);
    }
  }
  for (uint16_t w = 0; w < workers_.size(); ++w) {
    if (done_scratch_[w].empty()) continue;
    workers_[w]->post_done(done_scratch_[w]);
    done_scratch_[w].clear();
  }
}

void ServerCore::log(const std::string& line) const {
  if (config_.log) {
    config_.log(line);
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

ServerStats ServerCore::stats() const {
  ServerStats s;
  s.connections_accepted = counters_.accepted.load();
  s.connections_refused = counters_.refused.load();
  s.connections_open = counters_.open.load();
  s.frames_in = counters_.frames.load();
  s.events_in = counters_.events.load();
  s.auth_failures = counters_.auth_failures.load();
  s.protocol_errors = counters_.protocol_errors.load();
  s.busy_events = counters_.busy.load();
  return s;
}

// ---- Worker -------------------------------------------------------------------------------------

Worker::Worker(ServerCore& core, uint16_t index, uint16_t producer, uint32_t slots)
    : core_(core), index_(index), producer_(producer), slots_(new RequestSlot[slots]) {
  free_.reserve(slots);
  for (uint32_t i = slots; i-- > 0;) free_.push_back(i);
}

std::optional<uint32_t> Worker::take_slot() {
  if (free_.empty()) return std::nullopt;
  uint32_t s = free_.back();
  free_.pop_back();
  return s;
}

void Worker::free_slot(uint32_t slot) {
  RequestSlot& s = slots_[slot];
  s.session = 0;
  s.delivered = false;
  s.results.clear();
  free_.push_back(slot);
}

void Worker::orphan_slot(uint32_t slot) {
  RequestSlot& s = slots_[slot];
  s.session = 0;
  if (s.delivered) free_slot(slot);
}

void Worker::post_done(std::span<const uint32_t> slots) {
  {
    std::lock_guard lock(done_mu_);
    done_.insert(done_.end(), slots.begin(), slots.end());
  }
  if (wake) wake();
}

void Worker::drain_done() {
  {
    std::lock_guard lock(done_mu_);
    draining_.swap(done_);
  }
  for (uint32_t slot : draining_) {
    slots_[slot].delivered = true;
    auto it = sessions_.find(slots_[slot].session);
    if (it == sessions_.end()) {
      free_slot(slot);  // its connection is gone: the effects are durable, nobody to tell
    } else {
      it->second->on_request_done(slot);
    }
  }
  draining_.clear();
  if (log_advanced.exchange(false, std::memory_order_acq_rel))
    for (auto& [id, s] : sessions_) s->on_log_advanced();
  (void)core_;
}

// ---- Session ------------------------------------------------------------------------------------

Session::Session(ServerCore& core, Worker& worker, uint64_t id, std::string peer, Transport* transport,
                 int64_t now_ms)
    : core_(core),
      worker_(worker),
      id_(id),
      peer_(std::move(peer)),
      transport_(transport),
      // Until the handshake is done only small frames are read: an unauthenticated peer cannot
      // make the server buffer a large frame.
      reader_(check_client_frame, FrameLimits{kAuthBodyBytesMax, 1}),
      opened_ms_(now_ms),
      last_frame_ms_(now_ms) {
  worker_.add_session(this);
  if (core_.config().tls) {
    std::string why;
    tls_ = TlsStream::server(*core_.config().tls, &why);
    if (!tls_) {
      core_.log("tallyd: TLS connection from " + peer_ + " refused: " + why);
      closing_ = true;  // nothing is sent in plaintext on a TLS listener
    }
  }
}

Session::~Session() {
  if (streaming_) write_cursor(true);
  if (sync_follower_) core_.ledger().follower_gone(consumer_);
  if (!consumer_.empty()) core_.release_consumer(consumer_);
  if (streaming_) {
    core_.log("tallyd: subscriber " + (consumer_.empty() ? std::string("(unnamed)") : consumer_) + " from " + peer_ +
              " gone after LSN " + std::to_string(stream_next_ - 1));
    worker_.subscribers.fetch_sub(1, std::memory_order_acq_rel);
    core_.subscriber_added(-1);
  }
  // Requests still in flight stay with their slots: the worker frees them when they complete.
  drop_queue();
  account(-inflight_bytes_);
  worker_.remove_session(id_);
  core_.connection_closed();
}

void Session::account(int64_t delta) {
  inflight_bytes_ += delta;
  core_.memory_used().fetch_add(delta, std::memory_order_relaxed);
}

bool Session::want_read() const {
  if (closing_ || shutting_down_ || eof_) return false;
  if (core_.over_budget()) return false;
  // The bytes of a frame not yet whole do not count here (they do in the global budget): a frame
  // larger than the limit must still be read to its end, or the connection could never progress.
  int64_t held = inflight_bytes_ - static_cast<int64_t>(reader_.buffered_bytes());
  return held < static_cast<int64_t>(core_.limits().connection_inflight_bytes_max);
}

void Session::on_bytes(std::span<const uint8_t> bytes) {
  if (closing_) return;
  if (tls_) {
    if (!tls_in(bytes)) return;
    bytes = tls_plain_;
  }
  if (!reader_.mid_frame()) frame_begun_ms_ = core_.clock().now_ms();
  // Bytes of a frame not yet whole count against the budgets too.
  int64_t buffered_before = static_cast<int64_t>(reader_.buffered_bytes());
  reader_.feed(bytes);
  FrameHeader h;
  std::span<const uint8_t> body;
  for (;;) {
    FrameReader::Status s = reader_.next(&h, &body);
    if (s == FrameReader::Status::kNeedMore) break;
    if (s == FrameReader::Status::kError) {
      core_.counters().protocol_errors.fetch_add(1, std::memory_order_relaxed);
      fail(reader_.error(), reader_.error_request_id(),
           std::string("malformed frame: ") + std::string(to_string(reader_.error())));
      break;
    }
    core_.counters().frames.fetch_add(1, std::memory_order_relaxed);
    last_frame_ms_ = core_.clock().now_ms();
    handle(h, body);
    if (closing_) break;
    if (reader_.mid_frame()) frame_begun_ms_ = last_frame_ms_;
  }
  account(static_cast<int64_t>(reader_.buffered_bytes()) - buffered_before);
  pump();
}

bool Session::tls_in(std::span<const uint8_t> bytes) {
  tls_plain_.clear();
  bool ok = tls_->feed_ciphertext(bytes) && tls_->read_plaintext(&tls_plain_);
  size_t before = out_.size();
  tls_->take_ciphertext(&out_);  // handshake records; on failure, the alert that says why
  account(static_cast<int64_t>(out_.size() - before));
  if (!ok) {
    // A broken TLS stream can carry nothing more, not even an error frame: close.
    core_.counters().protocol_errors.fetch_add(1, std::memory_order_relaxed);
    core_.log("tallyd: TLS failure from " + peer_ + ": " + tls_->error());
    drop_queue();
    closing_ = true;
  }
  if (out_.size() != before || closing_) transport_->kick();
  return ok;
}

void Session::on_eof() {
  if (closing_) return;
  if (reader_.mid_frame()) {
    fail(ErrorCode::kTruncated, 0, "the stream ended inside a frame");
    return;
  }
  // The client sent all it will: answer what it asked, then close.
  eof_ = true;
  pump();
  transport_->kick();
}

void Session::on_tick(int64_t now) {
  if (closing_) return;
  if (state_ != State::kReady && now - opened_ms_ > core_.limits().handshake_timeout_ms) {
    fail(ErrorCode::kTimeout, 0, "handshake not finished in time");
  } else if (reader_.mid_frame() && now - frame_begun_ms_ > core_.limits().frame_timeout_ms) {
    fail(ErrorCode::kTimeout, 0, "a frame was begun and not finished in time");
  } else if (!streaming_ && queue_.empty() && now - last_frame_ms_ > core_.limits().idle_timeout_ms) {
    fail(ErrorCode::kTimeout, 0, "idle for too long");
  } else if (streaming_ && !key_still_valid()) {
    fail(ErrorCode::kAuthFailed, stream_request_id_, "the key was revoked");
  } else if (streaming_) {
    write_cursor(false);
    stream_fill();  // also the heartbeat
  }
  transport_->kick();  // resumes reading once a global budget has room again
}

void Session::begin_shutdown() {
  if (closing_) return;
  shutting_down_ = true;
  pump();
  transport_->kick();
}

void Session::begin_failure(const std::string& why) {
  if (closing_) return;
  failure_ = why;
  shutting_down_ = true;
  pump();
  transport_->kick();
}

void Session::handle(const FrameHeader& h, std::span<const uint8_t> body) {
  switch (h.type) {
    case MsgType::kAuthStart:
      if (state_ != State::kAwaitStart) return fail(ErrorCode::kUnexpectedMessage, h.request_id, "already authenticated");
      return handle_auth_start(h, body);
    case MsgType::kAuthFinish:
      if (state_ != State::kAwaitFinish) return fail(ErrorCode::kUnexpectedMessage, h.request_id, "auth_finish out of turn");
      return handle_auth_finish(h, body);
    case MsgType::kPing: {
      Item it{ItemKind::kPong, h.request_id, 0, kHeaderBytes + body.size(), {}, {body.begin(), body.end()}};
      account(static_cast<int64_t>(it.bytes));
      queue_.push_back(std::move(it));
      return;
    }
    case MsgType::kPong: return;  // an answer to nothing we sent: ignored
    default: break;
  }
  if (state_ != State::kReady)
    return fail(ErrorCode::kUnexpectedMessage, h.request_id,
                std::string(to_string(h.type)) + " before the handshake finished");
  if (!key_still_valid()) return fail(ErrorCode::kAuthFailed, h.request_id, "the key was revoked");
  if (subscribe_received_) {
    if (h.type == MsgType::kAck) return handle_ack(h, body);
    return fail(ErrorCode::kUnexpectedMessage, h.request_id,
                std::string(to_string(h.type)) + " on a subscribed connection (only ack and ping)");
  }
  switch (h.type) {
    case MsgType::kEvents: return handle_events(h, body);
    case MsgType::kHistory: return handle_query(h, body, ItemKind::kHistory);
    case MsgType::kLookup: return handle_query(h, body, ItemKind::kLookup);
    case MsgType::kStatement: return handle_query(h, body, ItemKind::kStatement);
    case MsgType::kStats: {
      Query q;
      q.program = key_->program;
      Item it{ItemKind::kStats, h.request_id, 0, kHeaderBytes, q, {}};
      account(static_cast<int64_t>(it.bytes));
      queue_.push_back(std::move(it));
      return;
    }
    case MsgType::kInfo: {
      Item it{ItemKind::kInfo, h.request_id, 0, kHeaderBytes, {}, {}};
      account(static_cast<int64_t>(it.bytes));
      queue_.push_back(std::move(it));
      return;
    }
    case MsgType::kSubscribe: {
      Item it{ItemKind::kSubscribe, h.request_id, 0, kHeaderBytes + body.size(), {}, {}};
      if (!decode_subscribe(body.data(), &it.sub))
        return fail(ErrorCode::kBadRecord, h.request_id, "malformed subscribe record");
      subscribe_received_ = true;
      account(static_cast<int64_t>(it.bytes));
      queue_.push_back(std::move(it));
      return;
    }
    case MsgType::kAck: return fail(ErrorCode::kUnexpectedMessage, h.request_id, "ack before subscribe");
    default: return fail(ErrorCode::kUnknownType, h.request_id, "unknown message type");
  }
}

void Session::handle_ack(const FrameHeader& h, std::span<const uint8_t> body) {
  uint64_t lsn = 0;
  if (!decode_ack(body.data(), &lsn)) return fail(ErrorCode::kBadRecord, h.request_id, "malformed ack record");
  if (!streaming_ || consumer_.empty())
    return fail(ErrorCode::kUnexpectedMessage, h.request_id, "ack without a named subscription");
  if (lsn >= stream_next_)
    return fail(ErrorCode::kBadRecord, h.request_id,
                "ack of LSN " + std::to_string(lsn) + ", beyond the last one sent (" + std::to_string(stream_next_ - 1) + ")");
  if (lsn <= acked_) return;
  acked_ = lsn;
  if (sync_follower_) core_.ledger().follower_ack(consumer_, lsn);
  write_cursor(false);
}

// The durable cursor serves log retention, which needs no precision: written at most once a
// second (and at the end), so a follower acking every commit costs the primary no extra commits.
void Session::write_cursor(bool now) {
  if (consumer_.empty() || acked_ <= cursor_written_) return;
  int64_t t = core_.clock().now_ms();
  if (!now && t - cursor_written_ms_ < 1000) return;
  core_.ledger().set_cursor(consumer_, acked_);
  cursor_written_ = acked_;
  cursor_written_ms_ = t;
}

void Session::start_stream(const Item& it) {
  const SubscribeRequest& req = it.sub;
  SubscribeReply rep;
  LogRange range = core_.ledger().log_range();
  rep.oldest_lsn = range.oldest_lsn;
  rep.durable_lsn = range.durable_lsn;
  rep.epoch = range.epoch;
  rep.filtered = key_->role != Role::kReplica;
  std::string name;
  if (!req.name.empty()) {
    // Names of program-limited keys live under their program: one program's reader cannot move
    // another's cursor.
    name = rep.filtered ? "p" + std::to_string(key_->program) + "." + req.name : req.name;
  }
  if (key_->role == Role::kPos || ((req.flags & kSubscribeSync) && key_->role != Role::kReplica)) {
    rep.status = SubscribeStatus::kForbidden;
  } else if ((req.flags & kSubscribeSync) && req.name.empty()) {
    rep.status = SubscribeStatus::kBadName;  // a synchronous follower is known by its name
  } else if (!req.name.empty() && !valid_consumer_name(req.name)) {
    rep.status = SubscribeStatus::kBadName;
  } else if (!name.empty() && !core_.claim_consumer(name)) {
    rep.status = SubscribeStatus::kNameInUse;
  } else {
    consumer_ = name;
    std::optional<uint64_t> cursor;
    try {
      if (!name.empty()) cursor = core_.ledger().cursor(name);
    } catch (const std::exception& e) {
      // Not fail() here: this runs inside pump(), which fail() would re-enter on this same item.
      core_.release_consumer(consumer_);
      consumer_.clear();
      deferred_failure_ = std::string("reading the consumer's cursor: ") + e.what();
      return;
    }
    rep.cursor = cursor.value_or(0);
    uint64_t from = req.from_lsn;
    if ((req.flags & kSubscribeResume) && cursor) from = *cursor + 1;
    if (from == 0) from = range.oldest_lsn;
    rep.start_lsn = from;
    if (from < range.oldest_lsn) {
      rep.status = SubscribeStatus::kTrimmed;
    } else if (from > range.durable_lsn + 1) {
      rep.status = SubscribeStatus::kAhead;
    }
    if (rep.status != SubscribeStatus::kOk) {
      if (!consumer_.empty()) core_.release_consumer(consumer_);
      consumer_.clear();
    }
  }
  scratch_body_.resize(kSubscribedRecordBytes);
  encode_subscribed(scratch_body_.data(), rep);
  emit(MsgType::kSubscribed, it.request_id, scratch_body_, 1);
  if (rep.status != SubscribeStatus::kOk) {
    subscribe_received_ = false;  // the connection may subscribe again, or do anything else
    return;
  }
  streaming_ = true;
  sync_follower_ = (req.flags & kSubscribeSync) != 0;
  cursor_written_ = acked_ = rep.cursor;
  core_.log("tallyd: subscriber " + (consumer_.empty() ? std::string("(unnamed)") : consumer_) + " from " + peer_ +
            ": LSN " + std::to_string(rep.start_lsn) + " on" + (rep.filtered ? ", program " + std::to_string(key_->program) : "") +
            (sync_follower_ ? ", synchronous follower" : ""));
  stream_request_id_ = it.request_id;
  stream_next_ = rep.start_lsn;
  stream_program_ = rep.filtered ? key_->program : 0;
  constexpr size_t kDefaultFrame = 256u << 10, kMinFrame = 4u << 10, kMaxFrame = 4u << 20;
  stream_frame_bytes_ = req.frame_bytes == 0 ? kDefaultFrame : std::clamp<size_t>(req.frame_bytes, kMinFrame, kMaxFrame);
  stream_last_send_ms_ = core_.clock().now_ms();
  worker_.subscribers.fetch_add(1, std::memory_order_acq_rel);
  core_.subscriber_added(1);
  stream_kick_ = true;  // pump() starts the stream once the reply is queued
}

void Session::on_log_advanced() {
  if (streaming_) stream_fill();
}

// Bounded by the connection's window: batches are read from LMDB only while less than about four
// frames are queued or being written, so a slow subscriber costs the server no memory; it is
// served from LMDB when it catches up, never from a buffer of the live tail.
void Session::stream_fill() {
  if (closing_ || !streaming_) return;
  const int64_t window = static_cast<int64_t>(4 * stream_frame_bytes_);
  size_t before = out_.size();
  while (!closing_ && inflight_bytes_ < window) {
    stream_buf_.resize(kLogBatchesPrefixBytes);
    LogRead r;
    try {
      r = core_.ledger().read_log(stream_next_, stream_frame_bytes_, stream_program_, &stream_buf_);
    } catch (const std::exception& e) {
      return fail(ErrorCode::kStorageFailed, stream_request_id_, std::string("reading the log: ") + e.what());
    }
    if (r.trimmed)
      return fail(ErrorCode::kTrimmed, stream_request_id_,
                  "the log was trimmed past LSN " + std::to_string(stream_next_) + "; the oldest it holds is " +
                      std::to_string(r.range.oldest_lsn));
    int64_t now = core_.clock().now_ms();
    if (r.batches == 0 && now - stream_last_send_ms_ < 1000) break;
    encode_stream_prefix(stream_buf_.data(), StreamPrefix{r.range.durable_lsn, now});
    emit(MsgType::kLogBatches, stream_request_id_, stream_buf_, r.batches);
    stream_last_send_ms_ = now;
    stream_next_ = r.next_lsn;
    if (r.batches == 0) break;  // a heartbeat
  }
  if (out_.size() != before) transport_->kick();
}

void Session::handle_auth_start(const FrameHeader& h, std::span<const uint8_t> body) {
  std::string_view text(reinterpret_cast<const char*>(body.data()), body.size());
  std::optional<std::string> user = scram_.client_first(text);
  if (!user) return fail(ErrorCode::kBadRecord, h.request_id, "malformed SCRAM client-first-message");
  uint32_t id = 0;
  bool numeric = !user->empty() && user->size() <= 10;
  for (char c : *user) numeric &= c >= '0' && c <= '9';
  if (numeric) {
    uint64_t v = std::stoull(*user);
    numeric = v <= UINT32_MAX;
    id = static_cast<uint32_t>(v);
  }
  if (numeric) key_ = core_.find_key(id, &key_generation_);
  // An unknown key gets a challenge like any other, and fails at the proof.
  std::optional<std::string> first = scram_.server_first(key_ ? &key_->verifier : nullptr, core_.fake_salt_key());
  if (!first) return fail(ErrorCode::kAuthFailed, h.request_id, "authentication failed");
  state_ = State::kAwaitFinish;
  std::vector<uint8_t> b(first->begin(), first->end());
  emit(MsgType::kAuthChallenge, h.request_id, b, 0);
  user_name_ = *user;
}

void Session::handle_auth_finish(const FrameHeader& h, std::span<const uint8_t> body) {
  std::string_view text(reinterpret_cast<const char*>(body.data()), body.size());
  std::optional<std::string> final_msg = scram_.client_final(text);
  if (!final_msg || !key_) {
    core_.auth_failed(peer_, key_ ? "wrong proof for key " + std::to_string(key_->id)
                                  : "unknown key '" + user_name_.substr(0, 64) + "'");
    key_.reset();
    return fail(ErrorCode::kAuthFailed, h.request_id, "authentication failed");
  }
  state_ = State::kReady;
  reader_.set_limits(core_.limits().frame);
  program_index_ = core_.program_index(key_->program);
  SessionInfo info{key_->id, key_->program, key_->role, core_.limits().frame.events_per_frame_max};
  if (const Program* rules = core_.ledger().rules(key_->program)) {
    info.unit = rules->unit;
    info.currency = rules->currency;
  }
  std::vector<uint8_t> b(kAuthOkInfoBytes);
  encode_session_info(b.data(), info);
  b.insert(b.end(), final_msg->begin(), final_msg->end());
  emit(MsgType::kAuthOk, h.request_id, b, 0);
}

bool Session::key_still_valid() {
  if (core_.key_generation() == key_generation_) return true;
  uint64_t gen = 0;
  std::optional<ApiKey> now = core_.find_key(key_->id, &gen);
  if (!now || now->program != key_->program || now->role != key_->role ||
      now->verifier.stored_key != key_->verifier.stored_key)
    return false;
  key_generation_ = gen;
  return true;
}

// Checks every event before any reaches the engine: a frame with a malformed record is refused
// whole. Events outside the key's program or role are answered here; the rest go to the ledger.
void Session::handle_events(const FrameHeader& h, std::span<const uint8_t> body) {
  const uint32_t n = h.record_count;
  core_.counters().events.fetch_add(n, std::memory_order_relaxed);
  std::optional<uint32_t> slot_index = worker_.take_slot();
  if (!slot_index) {
    // Every slot of this worker is in flight: the connection is not read again until one frees.
    return fail(ErrorCode::kBusy, h.request_id, "too many requests in flight on this server");
  }
  RequestSlot& slot = worker_.slot(*slot_index);
  slot.results.assign(n, WireResult{});
  slot.session = id_;
  slot.program_index = program_index_;
  scratch_events_.clear();
  std::vector<uint32_t>& positions = scratch_positions_;
  positions.clear();
  for (uint32_t i = 0; i < n; ++i) {
    Event e;
    if (!decode_event(body.data() + size_t{i} * kEventRecordBytes, &e)) {
      worker_.free_slot(*slot_index);
      return fail(ErrorCode::kBadRecord, h.request_id,
                  "event " + std::to_string(i) + ": a reserved field is not zero");
    }
    if (static_cast<uint8_t>(e.kind) == 0 || is_internal(e.kind) || e.kind > kClientKindMax) {
      slot.results[i] = wire_result(Result::kInvalidKind);
    } else if (e.program != key_->program || !role_allows(key_->role, e.kind)) {
      slot.results[i] = wire_result(Result::kForbidden);
    } else {
      e.key_id = key_->id;
      e.tag = ServerCore::make_tag(worker_.index(), *slot_index, i);
      scratch_events_.push_back(e);
      positions.push_back(i);
    }
  }
  uint32_t engine = static_cast<uint32_t>(scratch_events_.size());
  if (engine > 0 && !core_.reserve_events(program_index_, engine)) {
    core_.counters().busy.fetch_add(engine, std::memory_order_relaxed);
    for (uint32_t i : positions) slot.results[i] = wire_result(Result::kBusy);
    engine = 0;
  }
  if (engine > 0 && core_.failed()) {
    core_.release_events(program_index_, engine);
    for (uint32_t i : positions) slot.results[i] = wire_result(Result::kStorageFailed);
    engine = 0;
  }
  slot.engine_events = engine;
  slot.delivered = engine == 0;  // nothing for the engine: answered already
  slot.remaining.store(engine, std::memory_order_release);
  Item it{ItemKind::kEvents, h.request_id, *slot_index, kHeaderBytes + body.size(), {}, {}};
  account(static_cast<int64_t>(it.bytes));
  queue_.push_back(std::move(it));
  if (engine > 0) core_.ledger().submit(worker_.producer(), scratch_events_, core_.clock().now_ms());
}

void Session::handle_query(const FrameHeader& h, std::span<const uint8_t> body, ItemKind kind) {
  Query q;
  bool ok = kind == ItemKind::kHistory  ? decode_history_query(body.data(), &q)
            : kind == ItemKind::kLookup ? decode_lookup_query(body.data(), &q)
                                        : decode_statement_query(body.data(), &q.program, &q.account);
  if (!ok) return fail(ErrorCode::kBadRecord, h.request_id, "malformed query record");
  if (q.program == 0) q.program = key_->program;
  if (q.program != key_->program) return fail(ErrorCode::kForbidden, h.request_id, "query outside the key's program");
  Item it{kind, h.request_id, 0, kHeaderBytes + body.size(), q, {}};
  account(static_cast<int64_t>(it.bytes));
  queue_.push_back(std::move(it));
}

void Session::on_request_done(uint32_t) { pump(); }

// Replies leave strictly in request order: the front item goes out once it is ready.
void Session::pump() {
  size_t before = out_.size();
  while (!queue_.empty()) {
    Item& it = queue_.front();
    if (it.kind == ItemKind::kEvents && !worker_.slot(it.slot).delivered) break;
    write_reply(it);
    account(-static_cast<int64_t>(it.bytes));
    queue_.pop_front();
  }
  if (eof_ && queue_.empty()) closing_ = true;
  if (shutting_down_ && queue_.empty() && !closing_) {
    closing_ = true;
    ErrorCode code = failure_.empty() ? ErrorCode::kShuttingDown : ErrorCode::kStorageFailed;
    std::string msg = failure_.empty() ? "the server is shutting down" : "the durable log failed: " + failure_;
    emit(MsgType::kError, 0, error_body(code, msg), 0);
  }
  if (!deferred_failure_.empty()) {
    std::string why = std::move(deferred_failure_);
    deferred_failure_.clear();
    return fail(ErrorCode::kStorageFailed, 0, why);
  }
  if (stream_kick_) {
    stream_kick_ = false;
    stream_fill();
  }
  if (out_.size() != before || closing_) transport_->kick();
}

void Session::write_reply(Item& it) {
  switch (it.kind) {
    case ItemKind::kEvents: {
      RequestSlot& s = worker_.slot(it.slot);
      scratch_body_.resize(s.results.size() * kResultRecordBytes);
      for (size_t i = 0; i < s.results.size(); ++i) encode_result(scratch_body_.data() + i * kResultRecordBytes, s.results[i]);
      emit(MsgType::kResults, it.request_id, scratch_body_, static_cast<uint32_t>(s.results.size()));
      worker_.free_slot(it.slot);
      return;
    }
    case ItemKind::kHistory:
    case ItemKind::kLookup: {
      // Run when it reaches the front: every earlier request of this connection is durable by
      // then, so the answer includes them.
      std::vector<HistoryEntry> entries =
          it.kind == ItemKind::kHistory
              ? core_.ledger().history(it.query.program, it.query.account, it.query.limit, it.query.before)
              : core_.ledger().lookup(it.query.program, it.query.ref);
      if (entries.size() > kEntriesPerReplyMax) entries.resize(kEntriesPerReplyMax);
      scratch_body_.resize(entries.size() * kEntryRecordBytes);
      for (size_t i = 0; i < entries.size(); ++i) encode_entry(scratch_body_.data() + i * kEntryRecordBytes, entries[i]);
      emit(MsgType::kEntries, it.request_id, scratch_body_, static_cast<uint32_t>(entries.size()));
      return;
    }
    case ItemKind::kStatement: {
      // At the front too: the member's shard has applied every earlier event of this connection.
      StatementReply r;
      r.result = core_.ledger().statement(it.query.program, it.query.account, &r.statement);
      uint32_t records = 0;
      std::vector<uint8_t> body = encode_statement(r, &records);
      emit(MsgType::kStatementReply, it.request_id, body, records);
      return;
    }
    case ItemKind::kStats: {
      // At the front, like a query: the totals include every earlier request of this connection.
      StatsRecord st;
      st.program = core_.ledger().program_stats(it.query.program).value_or(ProgramStats{});
      st.log = core_.ledger().log_summary();
      scratch_body_.resize(kStatsRecordBytes);
      encode_stats(scratch_body_.data(), st);
      emit(MsgType::kStatsReply, it.request_id, scratch_body_, 1);
      return;
    }
    case ItemKind::kPong:
      emit(MsgType::kPong, it.request_id, it.body, 0);
      return;
    case ItemKind::kSubscribe:
      start_stream(it);
      return;
    case ItemKind::kInfo: {
      std::string info = core_.ledger().server_info().substr(0, kInfoBytesMax);
      emit(MsgType::kInfoReply, it.request_id, std::span(reinterpret_cast<const uint8_t*>(info.data()), info.size()), 0);
      return;
    }
  }
}

void Session::fail(ErrorCode code, uint64_t request_id, const std::string& message) {
  if (closing_) return;
  // What is ready goes out first, in order; answers still owed after that are dropped.
  pump();
  drop_queue();
  closing_ = true;
  emit(MsgType::kError, request_id, error_body(code, message), 0);
  transport_->kick();
}

void Session::drop_queue() {
  for (Item& it : queue_) {
    if (it.kind == ItemKind::kEvents) worker_.orphan_slot(it.slot);
    account(-static_cast<int64_t>(it.bytes));
  }
  queue_.clear();
}

void Session::emit(MsgType type, uint64_t request_id, std::span<const uint8_t> body, uint32_t records) {
  size_t before = out_.size();
  append_frame(out_, type, request_id, body, records);
  if (tls_) {
    // Encrypted in place: the frame's plaintext gives way to its ciphertext.
    bool ok = tls_->write_plaintext(std::span(out_).subspan(before));
    out_.resize(before);
    if (!ok && !closing_) {
      core_.log("tallyd: TLS failure to " + peer_ + ": " + tls_->error());
      closing_ = true;  // the reply cannot be sent: end the connection rather than leave it waiting
    }
    tls_->take_ciphertext(&out_);
  }
  // In flight is what is queued for the socket: the ciphertext, when TLS.
  account(static_cast<int64_t>(out_.size() - before));
}

bool Session::take_output(std::vector<uint8_t>* buf) {
  if (out_.empty()) return false;
  buf->clear();
  std::swap(*buf, out_);
  return true;
}

void Session::sent(size_t n) {
  account(-static_cast<int64_t>(n));
  if (streaming_) stream_fill();
}

}  // namespace tally::net
