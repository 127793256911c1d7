#include "storage/recovery.h"

#include <chrono>
#include <deque>

#include "storage/log_codec.h"

namespace tally::storage {
namespace {

// Where the remaining log must start: after the last trimmed batch, chained to its hash.
LogPosition trim_point(const Store& store) {
  LogPosition p;
  if (auto v = store.meta("trim_lsn")) p.next_lsn = std::stoull(*v) + 1;
  if (auto v = store.meta("trim_hash")) p.prev_hash = std::stoull(*v);
  return p;
}

std::string describe(const Effect& f) {
  return "shard " + std::to_string(f.shard) + " seq " + std::to_string(f.seq) + " " +
         std::string(to_string(f.event.kind)) + " account " + std::to_string(f.event.account) +
         ": result " + std::string(to_string(f.result)) + ", points " + std::to_string(f.points) +
         ", available " + std::to_string(f.state.available) + ", held " + std::to_string(f.state.held) +
         ", flags " + std::to_string(f.flags) + ", time " + std::to_string(f.time_ms) +
         (f.depends_seq != 0 ? ", depends on shard " + std::to_string(f.depends_shard) + " seq " +
                                   std::to_string(f.depends_seq)
                             : std::string());
}

// Checks one batch against the expected position; decodes it into *out when asked.
bool check_batch(uint64_t lsn, std::span<const uint8_t> bytes, LogCheck* c, std::vector<Effect>* out) {
  BatchHeader h;
  std::vector<Effect> scratch;
  std::vector<Effect>* effects = out != nullptr ? out : &scratch;
  size_t before = effects->size();
  DecodeError err = decode_batch(bytes, &h, effects);
  if (lsn != c->next.next_lsn) {
    c->ok = false;
    c->bad_lsn = c->next.next_lsn;
    c->error = "batch " + std::to_string(c->next.next_lsn) + " is missing (found " + std::to_string(lsn) + " next)";
    return false;
  }
  if (err != DecodeError::kOk) {
    c->ok = false;
    c->bad_lsn = lsn;
    c->error = std::string(to_string(err));
    return false;
  }
  if (h.lsn != lsn) {
    c->ok = false;
    c->bad_lsn = lsn;
    c->error = "stored under LSN " + std::to_string(lsn) + " but says LSN " + std::to_string(h.lsn);
    return false;
  }
  if (h.prev_hash != c->next.prev_hash) {
    c->ok = false;
    c->bad_lsn = lsn;
    c->error = "hash chain broken: previous-batch hash does not match (a batch was removed, replaced or reordered)";
    return false;
  }
  if (c->batches == 0) c->first_lsn = lsn;
  c->last_lsn = lsn;
  ++c->batches;
  c->records += h.record_count;
  for (size_t i = before; i < effects->size(); ++i) c->claims += ((*effects)[i].flags & kEffectClaimed) != 0;
  c->next.next_lsn = lsn + 1;
  c->next.prev_hash = h.hash;
  return true;
}

}  // namespace

LogCheck verify_log(const Store& store) {
  LogCheck c;
  c.next = trim_point(store);
  store.scan(0, [&](uint64_t lsn, std::span<const uint8_t> bytes) { return check_batch(lsn, bytes, &c, nullptr); });
  return c;
}

struct Replayer::State {
  std::vector<Shard*> shards;
  ReplayResult r;
  std::vector<std::deque<Effect>> produced;  // by shard: not yet matched to the log
  OpenLegs legs;
  std::vector<Effect> batch;
  ApplyOutput out;
  std::chrono::steady_clock::time_point t0;
};

Replayer::Replayer(const Store& store, std::span<Shard* const> shards) : s_(std::make_unique<State>()) {
  s_->t0 = std::chrono::steady_clock::now();
  s_->shards.assign(shards.begin(), shards.end());
  s_->r.log.next = trim_point(store);
  s_->r.checkpoint = load_checkpoint(store, shards);
  s_->produced.resize(shards.size());
  s_->legs = s_->r.checkpoint.open_legs;
}

Replayer::~Replayer() = default;

const LogPosition& Replayer::next() const { return s_->r.log.next; }

std::string Replayer::apply(uint64_t lsn, std::span<const uint8_t> bytes) {
  State& st = *s_;
  ReplayResult& r = st.r;
  std::vector<Shard*>& shards = st.shards;
  const std::vector<uint64_t>& cut = r.checkpoint.cut_seq;
  auto mismatch = [&](const std::string& what) { return "log batch " + std::to_string(lsn) + ": " + what; };
  st.batch.clear();
  if (!check_batch(lsn, bytes, &r.log, &st.batch)) return mismatch(r.log.error);
  const std::vector<Effect>& batch = st.batch;
  constexpr size_t kAhead = 8;  // overlap the memory misses of nearby records, as apply_batch does
  for (size_t k = 0; k < batch.size() && k < kAhead; ++k)
    if (batch[k].shard < shards.size()) shards[batch[k].shard]->prefetch(batch[k].event);
  for (size_t k = 0; k < batch.size(); ++k) {
    const Effect& f = batch[k];
    if (k + kAhead < batch.size() && batch[k + kAhead].shard < shards.size())
      shards[batch[k + kAhead].shard]->prefetch(batch[k + kAhead].event);
    if (f.shard >= shards.size())
      return mismatch("written by shard " + std::to_string(f.shard) + " but only " + std::to_string(shards.size()) +
                      " shards are configured");
    r.last_time_ms = std::max(r.last_time_ms, f.time_ms);
    st.legs.observe(f);
    if (f.seq <= cut[f.shard]) {
      // The checkpoint holds this effect; its claim lives in the fraud set, not in the slices.
      if (f.flags & kEffectClaimed)
        shards[f.shard]->fraud_set().insert_unsynchronised(f.event.program, f.event.ref, f.shard,
                                                           reference_day(f.event, f.time_ms));
      ++r.skipped;
      continue;
    }
    std::deque<Effect>& q = st.produced[f.shard];
    if (q.empty()) {
      st.out.clear();
      shards[f.shard]->apply_logged(f, &st.out);
      for (const Effect& e : st.out.effects) q.push_back(e);
      if (q.empty()) return mismatch("replay produced nothing for " + describe(f));
    }
    if (!equal_logged(q.front(), f))
      return mismatch("replay differs from the log.\n  log:    " + describe(f) + "\n  replay: " + describe(q.front()) +
                      "\n(corrupt log, or program rules other than those it was written under)");
    q.pop_front();
  }
  return {};
}

ReplayResult Replayer::finish() {
  State& st = *s_;
  ReplayResult r = st.r;
  for (auto& q : st.produced)
    for (const Effect& e : q) r.unlogged_tail.push_back(e);
  r.legs = st.legs.owed();
  for (size_t i = 0; i < st.shards.size(); ++i) r.checkpoint.applied_seq[i] = st.shards[i]->last_seq();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - st.t0).count();
  return r;
}

ReplayResult replay_log(const Store& store, std::span<Shard* const> shards) {
  Replayer rp(store, shards);
  std::string error;
  store.scan(0, [&](uint64_t lsn, std::span<const uint8_t> bytes) {
    error = rp.apply(lsn, bytes);
    return error.empty();
  });
  ReplayResult r = rp.finish();
  if (!r.log.ok)
    throw StorageError("log batch " + std::to_string(r.log.bad_lsn) + ": " + r.log.error +
                           ". Refusing to start on a corrupt log: `tally-admin verify` reports it; "
                           "`tally-admin repair` truncates the log to the last good batch, saying what it drops.",
                       0);
  if (!error.empty()) throw StorageError(error, 0);
  return r;
}

}  // namespace tally::storage
