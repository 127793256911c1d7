#include "tools/follower.h"

#include <chrono>
#include <cstdio>

#include "engine/digest.h"
#include "storage/ledger.h"
#include "storage/log_codec.h"
#include "tools/ledger_service.h"
#include "tools/log_stream.h"

namespace tally {

FollowerService::FollowerService(FollowerOptions options)
    : options_(std::move(options)), slots_(std::max<uint16_t>(options_.shard_count, 1)) {
  store_ = std::make_unique<storage::Store>(options_.store);
  if (storage::check_ledger_meta(*store_, options_.shard_count, options_.programs))
    store_->commit({}, storage::ledger_meta(options_.shard_count, options_.programs));
  storage::LogCheck check = storage::verify_log(*store_);
  if (!check.ok)
    throw storage::StorageError("log batch " + std::to_string(check.bad_lsn) + ": " + check.error +
                                    ". Refusing to follow from a corrupt log (`tally-admin verify`)",
                                0);
  // Room for every reference the log holds and what the primary may still send.
  uint64_t checkpointed = 0;
  if (auto v = store_->meta("dedup_claims")) checkpointed = std::stoull(*v);
  uint64_t claims = check.claims + checkpointed;
  uint64_t refs = std::max<uint64_t>(options_.references_max, claims + claims / 4 + 1024);
  fraud_ = std::make_unique<FraudSet>(refs, options_.shard_count);
  std::vector<Shard*> ptrs;
  for (uint16_t s = 0; s < options_.shard_count; ++s) {
    shards_.push_back(std::make_unique<Shard>(s, options_.programs, fraud_.get()));
    ptrs.push_back(shards_.back().get());
  }
  replayer_ = std::make_unique<storage::Replayer>(*store_, ptrs);
  std::string error;
  store_->scan(0, [&](uint64_t lsn, std::span<const uint8_t> bytes) {
    error = replayer_->apply(lsn, bytes);
    return error.empty();
  });
  if (!error.empty()) throw storage::StorageError(error, 0);
  status_.applied_lsn = replayer_->next().next_lsn - 1;
  next_prev_hash_ = replayer_->next().prev_hash;
  status_.epoch = storage::stored_epoch(*store_);
  if (options_.history.enabled) indexer_ = std::make_unique<storage::Indexer>(store_.get(), options_.history);
  thread_ = std::thread([this] { run(); });
}

FollowerService::~FollowerService() { stop(); }

void FollowerService::stop() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void FollowerService::attach(EffectListener* listener) {
  std::lock_guard lk(listener_mu_);
  listener_.store(listener, std::memory_order_release);
}

void FollowerService::log(const std::string& line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

void FollowerService::fail(const std::string& why) {
  log("tallyd: follower STOPPED: " + why);
  std::lock_guard lk(mu_);
  status_.failure = why;
  status_.connected = false;
  cv_.notify_all();
}

FollowerStatus FollowerService::status() const {
  std::lock_guard lk(mu_);
  return status_;
}

bool FollowerService::wait_applied(uint64_t lsn, int64_t timeout_ms) {
  std::unique_lock lk(mu_);
  cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms),
               [&] { return status_.applied_lsn >= lsn || !status_.failure.empty() || stopping_; });
  return status_.applied_lsn >= lsn;
}

// The replication loop: (re)connect, receive a frame's batches, commit them, apply them, ack.
void FollowerService::run() {
  const std::string where = options_.primary.host + ":" + std::to_string(options_.primary.port);
  std::string last_error;
  StreamBatch b;
  std::vector<StreamBatch> pending;
  for (;;) {
    uint64_t from;
    {
      std::unique_lock lk(mu_);
      if (stopping_ || !status_.failure.empty()) return;
      from = status_.applied_lsn + 1;
    }
    LogStreamOptions so;
    so.client = options_.primary;
    so.request.from_lsn = from;
    so.request.name = options_.cursor_name;
    so.request.flags = net::kSubscribeSync;  // counted when the primary acknowledges semi-synchronously
    so.request.frame_bytes = static_cast<uint32_t>(options_.frame_bytes);
    so.prev_hash = next_prev_hash_;
    LogStream st;
    net::ClientError e = st.open(so);
    if (!e && st.reply().filtered) {
      return fail("the key given for " + where + " is not a replica key: it sees one program only");
    }
    if (e && st.reply().status == net::SubscribeStatus::kTrimmed) {
      return fail("the primary " + where + " no longer holds LSN " + std::to_string(from) + " (its oldest is " +
                  std::to_string(st.reply().oldest_lsn) +
                  "): start this follower from a backup of the primary (tally-admin backup, then restore)");
    }
    if (e && st.reply().status == net::SubscribeStatus::kAhead) {
      return fail("this follower holds LSN 1.." + std::to_string(from - 1) + " but the primary " + where +
                  " only " + std::to_string(st.reply().durable_lsn) +
                  ": its log is not this one's past (an old primary, or a primary restored from an older backup); "
                  "restore this directory from a backup of the primary");
    }
    if (e) {
      if (e.message != last_error) log("tallyd: follower: cannot follow " + where + ": " + e.message + "; retrying");
      last_error = e.message;
      std::unique_lock lk(mu_);
      cv_.wait_for(lk, std::chrono::milliseconds(options_.retry_ms), [&] { return stopping_; });
      continue;
    }
    last_error.clear();
    log("tallyd: follower: following " + where + " from LSN " + std::to_string(from));
    {
      std::lock_guard lk(mu_);
      status_.connected = true;
    }
    for (;;) {
      {
        std::lock_guard lk(mu_);
        if (stopping_) return;
      }
      pending.clear();
      bool got = false;
      e = st.next(&b, 200, &got);
      size_t bytes_pending = 0;
      while (!e && got) {
        bytes_pending += b.bytes.size();
        pending.push_back(std::move(b));
        // What has arrived, up to about a frame: one commit for all of it. Bounded, so that while
        // catching up the follower commits (and can be stopped) every frame or so.
        if (bytes_pending >= options_.frame_bytes) break;
        e = st.next(&b, 0, &got);
      }
      std::vector<std::pair<std::string, uint64_t>> cursors;
      {
        std::lock_guard lk(mu_);
        cursors.swap(cursors_);
        status_.primary_durable_lsn = st.server_durable_lsn();
      }
      bool index_work = indexer_ && indexer_->has_work();
      if (!pending.empty() || !cursors.empty() || index_work) {
        // 1. Durable here, byte for byte.
        storage::WriteSet w;
        std::vector<storage::BatchBytes> bytes;
        std::vector<Effect> records;
        std::vector<LogPos> positions;
        uint64_t epoch = status().epoch;
        for (const StreamBatch& p : pending) {
          if (p.header.epoch < epoch)
            return fail("the primary " + where + " sent LSN " + std::to_string(p.header.lsn) + " of epoch " +
                        std::to_string(p.header.epoch) + ", older than epoch " + std::to_string(epoch) +
                        " this follower has: an old primary? Refusing it");
          epoch = p.header.epoch;
          bytes.push_back({p.header.lsn, p.bytes});
          for (uint32_t i = 0; i < p.records.size(); ++i) {
            records.push_back(p.records[i]);
            positions.push_back({p.header.lsn, i});
          }
        }
        w.log = bytes;
        if (indexer_) {
          indexer_->add(records, positions);
          indexer_->prepare(&w);
        }
        for (auto& [name, lsn] : cursors) w.meta.emplace_back("cursor." + name, std::to_string(lsn));
        if (epoch != status().epoch) w.meta.emplace_back("epoch", std::to_string(epoch));
        if (!pending.empty()) w.meta.emplace_back("follow_primary_lsn", std::to_string(st.server_durable_lsn()));
        try {
          store_->write(w);
        } catch (const storage::StorageError& se) {
          return fail(std::string("storage failed, following stopped: ") + se.what());
        }
        if (indexer_) indexer_->committed();
        // 2. Applied to the shards, each record checked against what the primary decided.
        if (!pending.empty()) {
          std::unique_lock state(state_mu_);
          for (const StreamBatch& p : pending) {
            std::string err = replayer_->apply(p.header.lsn, p.bytes);
            if (!err.empty()) {
              state.unlock();
              return fail("the primary's log does not replay here (" + err +
                          "). Are the programs and shard count the primary's?");
            }
          }
        }
        if (!pending.empty()) {
          std::lock_guard lk(mu_);
          status_.applied_lsn = pending.back().header.lsn;
          status_.epoch = epoch;
          status_.batches += pending.size();
          ++status_.commits;
          next_prev_hash_ = pending.back().header.hash;
        }
        cv_.notify_all();
        // 3. Told: the primary's cursor for this follower, and this follower's own subscribers.
        if (!pending.empty()) {
          (void)st.ack(pending.back().header.lsn);
          if (EffectListener* l = listener_.load(std::memory_order_acquire)) l->on_log_advanced();
        }
      }
      if (e && e.kind == net::ClientError::Kind::kProtocol && e.message.rfind("stream: ", 0) == 0) {
        // A gap or a broken chain: the primary's log is not the continuation of this one.
        return fail("the stream from " + where + " does not continue this follower's log: " + e.message);
      }
      if (e) {
        log("tallyd: follower: the stream from " + where + " broke: " + e.message + "; reconnecting");
        std::lock_guard lk(mu_);
        status_.connected = false;
        break;
      }
    }
  }
}

// ---- LedgerService ------------------------------------------------------------------------------

void FollowerService::submit(uint16_t, std::span<const Event> events, int64_t time_ms) {
  std::vector<Effect> out(events.size());
  {
    std::shared_lock state(state_mu_);
    for (size_t i = 0; i < events.size(); ++i) {
      const Event& e = events[i];
      Effect& f = out[i];
      f.event = e;
      f.time_ms = time_ms;
      if (e.kind != EventKind::kBalance) {
        f.result = Result::kNotPrimary;
        f.flags = kEffectNoAccount;
        continue;
      }
      bool known = false;
      for (const Program& p : options_.programs) known |= p.id == e.program;
      uint16_t s = slots_.shard_for(e.program, e.account);
      f.shard = s;
      f.seq = shards_[s]->last_seq();
      if (!known) {
        f.result = Result::kProgramNotFound;
        f.flags = kEffectNoAccount;
      } else if (!shards_[s]->account(e.program, e.account, &f.state)) {
        f.result = Result::kAccountNotFound;
        f.flags = kEffectNoAccount;
      }
    }
  }
  // What the shards hold is durable here: answered at once.
  std::lock_guard lk(listener_mu_);
  if (EffectListener* l = listener_.load(std::memory_order_acquire)) l->on_durable(out);
}

Result FollowerService::statement(uint32_t program, uint64_t account, Statement* out) {
  bool known = false;
  for (const Program& p : options_.programs) known |= p.id == program;
  if (!known) return Result::kProgramNotFound;
  std::shared_lock state(state_mu_);
  return shards_[slots_.shard_for(program, account)]->statement(program, account, out) ? Result::kOk
                                                                                      : Result::kAccountNotFound;
}

std::vector<HistoryEntry> FollowerService::history(uint32_t program, uint64_t account, size_t limit, LogPos before) {
  return storage::history(*store_, program, account, limit, before);
}

std::vector<HistoryEntry> FollowerService::lookup(uint32_t program, const Ref128& ref) {
  return storage::lookup(*store_, program, ref);
}

std::optional<ProgramStats> FollowerService::program_stats(uint32_t program) {
  bool known = false;
  for (const Program& p : options_.programs) known |= p.id == program;
  if (!known) return std::nullopt;
  ProgramStats sum;
  std::shared_lock state(state_mu_);
  for (const auto& s : shards_)
    if (const ProgramStats* ps = s->stats(program)) sum += *ps;
  return sum;
}

LogSummary FollowerService::log_summary() {
  FollowerStatus st = status();
  LogSummary s;
  s.durable_lsn = st.applied_lsn;
  s.commits = st.commits;
  return s;
}

std::string FollowerService::server_info() {
  FollowerStatus st = status();
  return "role=follower\nprimary=" + options_.primary.host + ":" + std::to_string(options_.primary.port) +
         "\nepoch=" + std::to_string(st.epoch) + "\ndurable_lsn=" + std::to_string(st.applied_lsn) +
         "\nprimary_durable_lsn=" + std::to_string(st.primary_durable_lsn) + "\nconnected=" +
         (st.connected ? "1" : "0") + (st.failure.empty() ? "" : "\nfailure=" + st.failure.substr(0, 300)) + "\n";
}

LogRange FollowerService::log_range() {
  FollowerStatus st = status();
  return store_log_range(*store_, st.applied_lsn, st.epoch);
}

LogRead FollowerService::read_log(uint64_t from, size_t max_bytes, uint32_t program, std::vector<uint8_t>* out) {
  return read_store_log(*store_, log_range(), from, max_bytes, program, out);
}

std::optional<uint64_t> FollowerService::cursor(const std::string& name) {
  auto v = store_->meta("cursor." + name);
  if (!v) return std::nullopt;
  return std::stoull(*v);
}

void FollowerService::set_cursor(const std::string& name, uint64_t lsn) {
  std::lock_guard lk(mu_);
  for (auto& [n, l] : cursors_) {
    if (n == name) {
      l = lsn;
      return;
    }
  }
  cursors_.emplace_back(name, lsn);
}

uint64_t FollowerService::digest() {
  std::shared_lock state(state_mu_);
  std::vector<const Shard*> ptrs;
  for (const auto& s : shards_) ptrs.push_back(s.get());
  return state_digest(ptrs, options_.programs);
}

}  // namespace tally
