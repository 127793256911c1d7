// The pipeline's threads. Map: ShardThread (rings and buffers of one shard), construction and
// stop, submit/tick (producer side), the shard loop with transfer lanes, the output loop, drain.
//
// Transfer legs never deadlock: a leg kTransferIn may cause a kTransferBounce, a bounce causes
// nothing. A shard that cannot push a leg of some lane because the receiver's lane is full keeps
// applying its own inbound legs of that lane and the later ones meanwhile (depth-first, at most
// two levels), so two shards pushing to each other always make room for each other.
#include "engine/runtime/pipeline.h"

#include <pthread.h>

#include <mutex>
#include <stdexcept>
#include <string>

namespace tally {

void name_this_thread(const std::string& name) {
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

namespace {
constexpr size_t kBatchEventsMax = 256;  // commands a shard takes from one ring at a time
constexpr int kDepthMax = 3;             // external batch, inbound legs, inbound bounces
}  // namespace

struct Pipeline::ShardThread {
  ShardThread(uint16_t i, const PipelineConfig& c, FraudSet* fraud)
      : index(i), shard(std::make_unique<Shard>(i, c.programs, fraud)),
        to_output(std::make_unique<SpscRing<Effect>>(c.output_ring_effects)) {
    for (uint16_t p = 0; p < c.producer_count; ++p)
      from_producer.push_back(std::make_unique<SpscRing<Command>>(c.producer_ring_events));
    for (auto& lane : lanes)
      for (uint16_t s = 0; s < c.shard_count; ++s)
        lane.push_back(std::make_unique<SpscRing<Command>>(c.lane_ring_events));
    for (int d = 0; d < kDepthMax; ++d) {
      commands[d].resize(kBatchEventsMax);
      outs[d].effects.reserve(kBatchEventsMax * 4);
      outs[d].forward.reserve(kBatchEventsMax);
    }
  }

  bool has_input() const {
    if (query_count.load(std::memory_order_acquire) > 0) return true;
    for (const auto& r : from_producer)
      if (!r->empty_approx()) return true;
    for (const auto& lane : lanes)
      for (const auto& r : lane)
        if (!r->empty_approx()) return true;
    return false;
  }

  uint16_t index;
  std::unique_ptr<Shard> shard;
  std::vector<std::unique_ptr<SpscRing<Command>>> from_producer;  // [producer]
  std::vector<std::unique_ptr<SpscRing<Command>>> lanes[kLaneCount];  // [lane][sending shard]
  std::unique_ptr<SpscRing<Effect>> to_output;
  Waiter work_waiter;    // this shard sleeps here when it has nothing to do
  Waiter input_space;    // producers sleep here when a ring to this shard is full
  Waiter output_space;   // this shard sleeps here when its output ring is full
  mutable std::mutex stats_mu;
  std::vector<ProgramStats> published;  // [index in config.programs], under stats_mu
  std::vector<Command> commands[kDepthMax];
  ApplyOutput outs[kDepthMax];
  std::thread thread;
  // Checkpoint of this shard: the round begun last, whether slices remain, the state at the cut.
  uint64_t checkpoint_round = 0;
  bool checkpoint_active = false;
  std::vector<uint8_t> checkpoint_state;
  uint64_t checkpoint_seq = 0;
  // Statements asked of this shard (Pipeline::statement), under query_mu.
  std::mutex query_mu;
  std::vector<StatementQuery*> queries;
  std::atomic<uint32_t> query_count{0};
};

struct Pipeline::StatementQuery {
  uint32_t program = 0;
  uint64_t account = 0;
  Statement* out = nullptr;
  bool found = false;
  bool done = false;
  std::mutex mu;
  std::condition_variable cv;
};

// ---- construction and stop ----------------------------------------------------------------------
Pipeline::Pipeline(PipelineConfig config, EffectSink sink, BeforeStart before_start)
    : config_(std::move(config)), sink_(std::move(sink)), slots_(std::max<uint16_t>(config_.shard_count, 1)),
      fraud_(config_.references_max, std::max<uint16_t>(config_.shard_count, 1)) {
  if (config_.shard_count < 1 || config_.shard_count > FraudSet::kShardsMax)
    throw std::invalid_argument("shard count must be in 1..1024");
  if (config_.producer_count < 1) throw std::invalid_argument("at least one producer");
  if (config_.programs.empty()) throw std::invalid_argument("at least one program");
  for (const Program& p : config_.programs) {
    std::string why = validate(p);
    if (!why.empty()) throw std::invalid_argument("program " + std::to_string(p.id) + ": " + why);
  }
  for (uint16_t s = 0; s < config_.shard_count; ++s)
    shards_.push_back(std::make_unique<ShardThread>(s, config_, &fraud_));
  if (before_start) {
    std::vector<Shard*> shards;
    for (auto& t : shards_) shards.push_back(t->shard.get());
    before_start(shards);
  }
  for (auto& t : shards_) initial_seq_.push_back(t->shard->last_seq());
  // Named, so top -H, perf and gdb show which thread is which ("tally-shard-3").
  for (auto& t : shards_)
    t->thread = std::thread([this, &t] {
      name_this_thread("tally-shard-" + std::to_string(t->index));
      shard_main(*t);
    });
  output_thread_ = std::thread([this] {
    name_this_thread("tally-output");
    output_main();
  });
}

Pipeline::~Pipeline() { stop(); }

const Shard& Pipeline::shard(uint16_t i) const { return *shards_[i]->shard; }

void Pipeline::stop() {
  if (stopped_) return;
  drain();
  stopping_.store(true, std::memory_order_seq_cst);
  for (auto& t : shards_) t->work_waiter.notify();
  output_waiter_.notify();
  for (auto& t : shards_) t->thread.join();
  output_thread_.join();
  stopped_ = true;
  for (auto& t : shards_) serve_queries(*t, false);  // whoever still waits gets an answer: not found
}

bool Pipeline::statement(uint32_t program, uint64_t account, Statement* out) {
  StatementQuery q;
  q.program = program;
  q.account = account;
  q.out = out;
  ShardThread& t = *shards_[shard_for(program, account)];
  {
    std::lock_guard lk(t.query_mu);
    if (stopping_.load(std::memory_order_acquire)) return false;
    t.queries.push_back(&q);
    t.query_count.fetch_add(1, std::memory_order_release);
  }
  t.work_waiter.notify();
  std::unique_lock lk(q.mu);
  q.cv.wait(lk, [&] { return q.done; });
  return q.found;
}

size_t Pipeline::serve_queries(ShardThread& t, bool answer) {
  if (t.query_count.load(std::memory_order_acquire) == 0) return 0;
  std::vector<StatementQuery*> queries;
  {
    std::lock_guard lk(t.query_mu);
    queries.swap(t.queries);
    t.query_count.store(0, std::memory_order_release);
  }
  for (StatementQuery* q : queries) {
    bool found = answer && t.shard->statement(q->program, q->account, q->out);
    std::lock_guard lk(q->mu);
    q->found = found;
    q->done = true;
    q->cv.notify_one();
  }
  return queries.size();
}

void Pipeline::drain() {
  for (;;) {
    uint64_t seen = progress_.load(std::memory_order_acquire);
    if (in_flight_.load(std::memory_order_acquire) == 0 &&
        effects_queued_.load(std::memory_order_acquire) == 0) {
      return;
    }
    progress_.wait(seen, std::memory_order_acquire);
  }
}

void Pipeline::finished_work(int64_t items) {
  if (in_flight_.fetch_sub(items, std::memory_order_acq_rel) == items) {
    progress_.fetch_add(1, std::memory_order_release);
    progress_.notify_all();
  }
}

// ---- producer side ------------------------------------------------------------------------------
void Pipeline::submit(uint16_t producer, std::span<const Event> events, int64_t time_ms) {
  route(producer, events, time_ms, false);
}

void Pipeline::resend_legs(uint16_t producer, std::span<const Event> legs, int64_t time_ms) {
  for (const Event& e : legs)
    if (e.kind != EventKind::kTransferIn && e.kind != EventKind::kTransferBounce)
      throw std::invalid_argument("resend_legs: only transfer legs");
  route(producer, legs, time_ms, true);
}

void Pipeline::route(uint16_t producer, std::span<const Event> events, int64_t time_ms,
                     bool internal_allowed) {
  in_flight_.fetch_add(static_cast<int64_t>(events.size()), std::memory_order_acq_rel);
  uint64_t touched = 0;  // shards to wake (bit per shard; all of them above 64)
  for (const Event& e : events) {
    uint16_t s = shard_for(e.program, e.account);
    ShardThread& t = *shards_[s];
    SpscRing<Command>& ring = *t.from_producer[producer];
    Command c{e, time_ms};
    // Internal kinds (transfer legs, expiries, ticks) come only from the engine and the runtime:
    // from a producer they would create points from nothing. The shard answers invalid_kind.
    if (is_internal(e.kind) && !internal_allowed) c.event.kind = EventKind::kInvalid;
    int spins = 0;
    while (!ring.try_push(c)) {  // backpressure: wake the shard, then wait for room
      t.work_waiter.notify();
      if (++spins < kSpinsBeforeBlocking) {
        cpu_relax();
        continue;
      }
      uint32_t key = t.input_space.prepare_wait();
      if (ring.size_approx() == ring.capacity()) t.input_space.wait(key);
      else t.input_space.cancel_wait();
    }
    touched |= s < 64 ? uint64_t{1} << s : ~uint64_t{0};
  }
  for (uint16_t s = 0; s < shards_.size(); ++s)
    if (s >= 64 || (touched >> s) & 1) shards_[s]->work_waiter.notify();
}

void Pipeline::tick(uint16_t producer, int64_t time_ms) {
  Event tick{};
  tick.kind = EventKind::kTick;
  in_flight_.fetch_add(static_cast<int64_t>(shards_.size()), std::memory_order_acq_rel);
  for (auto& t : shards_) {
    SpscRing<Command>& ring = *t->from_producer[producer];
    while (!ring.try_push(Command{tick, time_ms})) {
      t->work_waiter.notify();
      std::this_thread::yield();
    }
    t->work_waiter.notify();
  }
}

// ---- shard threads ------------------------------------------------------------------------------
void Pipeline::shard_main(ShardThread& t) {
  publish_stats(t);  // what recovery restored
  int spins = 0;
  for (;;) {
    size_t done = drain_lanes(t, kLaneIn, 1);
    for (auto& ring : t.from_producer) {
      size_t n = ring->pop_n(t.commands[0].data(), kBatchEventsMax);
      if (n == 0) continue;
      t.input_space.notify();
      done += process(t, t.commands[0].data(), n, 0);
    }
    done += checkpoint_work(t, done == 0);
    done += serve_queries(t, true);
    if (done > 0) {
      spins = 0;
      continue;
    }
    if (stopping_.load(std::memory_order_acquire)) return;
    if (++spins < kSpinsBeforeBlocking) {
      cpu_relax();
      continue;
    }
    uint32_t key = t.work_waiter.prepare_wait();
    if (t.has_input() || stopping_.load(std::memory_order_seq_cst) ||
        checkpoint_round_.load(std::memory_order_seq_cst) > t.checkpoint_round)
      t.work_waiter.cancel_wait();
    else t.work_waiter.wait(key);
    spins = 0;
  }
}

void Pipeline::request_checkpoint(uint64_t round) {
  checkpoint_round_.store(round, std::memory_order_seq_cst);
  for (auto& t : shards_) t->work_waiter.notify();
}

// Between batches: takes the cut when a new round was requested, then saves a bounded number of
// slices (more when there is nothing else to do) and hands them on. Returns non-zero while the
// checkpoint has work left, so the shard does not sleep before it is done.
size_t Pipeline::checkpoint_work(ShardThread& t, bool idle) {
  if (!t.checkpoint_active) {
    uint64_t want = checkpoint_round_.load(std::memory_order_acquire);
    if (want <= t.checkpoint_round) return 0;
    t.checkpoint_round = want;
    t.checkpoint_seq = t.shard->last_seq();
    t.checkpoint_state = t.shard->begin_checkpoint();
    t.checkpoint_active = true;
  }
  bool finished = t.shard->checkpoint_step(idle ? 16 * config_.checkpoint_slices_per_batch
                                                 : config_.checkpoint_slices_per_batch);
  std::vector<uint8_t>& saved = t.shard->checkpoint_out();
  if (saved.empty() && !finished) return 1;
  CheckpointPiece piece;
  piece.shard = t.index;
  piece.round = t.checkpoint_round;
  piece.slices.swap(saved);
  if (finished) {
    piece.done = true;
    piece.state = std::move(t.checkpoint_state);
    piece.cut_seq = t.checkpoint_seq;
    t.checkpoint_active = false;
  }
  config_.checkpoint_sink(std::move(piece));
  return 1;
}

size_t Pipeline::process(ShardThread& t, const Command* cmds, size_t n, int depth) {
  constexpr size_t kPrefetchDistance = 8;
  ApplyOutput& out = t.outs[depth];
  out.clear();
  for (size_t i = 0; i < std::min(n, kPrefetchDistance); ++i) t.shard->prefetch(cmds[i].event);
  for (size_t i = 0; i < n; ++i) {
    if (i + kPrefetchDistance < n) t.shard->prefetch(cmds[i + kPrefetchDistance].event);
    t.shard->apply(cmds[i].event, cmds[i].time_ms, &out);
  }
  if (depth == 0) t.shard->sweep(sweep_budget(n), &out);  // the expiry sweep moves on with the traffic
  flush(t, out, depth);
  finished_work(static_cast<int64_t>(n));
  return n;
}

void Pipeline::publish_stats(ShardThread& t) {
  std::lock_guard lk(t.stats_mu);
  t.published.resize(config_.programs.size());
  for (size_t i = 0; i < config_.programs.size(); ++i)
    if (const ProgramStats* st = t.shard->stats(config_.programs[i].id)) t.published[i] = *st;
}

const Program* Pipeline::program(uint32_t id) const {
  for (const Program& p : config_.programs)
    if (p.id == id) return &p;
  return nullptr;
}

std::optional<ProgramStats> Pipeline::program_stats(uint32_t program) const {
  size_t i = 0;
  while (i < config_.programs.size() && config_.programs[i].id != program) ++i;
  if (i == config_.programs.size()) return std::nullopt;
  ProgramStats sum;
  for (const auto& t : shards_) {
    std::lock_guard lk(t->stats_mu);
    if (i < t->published.size()) sum += t->published[i];
  }
  return sum;
}

// Effects first (they must reach the output before anything the legs cause), then the legs.
void Pipeline::flush(ShardThread& t, ApplyOutput& out, int depth) {
  if (!out.effects.empty()) {
    publish_stats(t);  // first: whoever sees an effect finds it counted
    effects_queued_.fetch_add(static_cast<int64_t>(out.effects.size()), std::memory_order_acq_rel);
    const Effect* next = out.effects.data();
    size_t left = out.effects.size();
    int spins = 0;
    while (left > 0) {
      size_t pushed = t.to_output->try_push_n(next, left);
      next += pushed;
      left -= pushed;
      output_waiter_.notify();
      if (left == 0) break;
      if (pushed > 0 || ++spins < kSpinsBeforeBlocking) {
        cpu_relax();
        continue;
      }
      uint32_t key = t.output_space.prepare_wait();
      if (t.to_output->size_approx() == t.to_output->capacity()) t.output_space.wait(key);
      else t.output_space.cancel_wait();
    }
  }
  for (const Event& leg : out.forward) {
    push_forward(t, leg, leg.kind == EventKind::kTransferBounce ? kLaneBounce : kLaneIn, depth);
  }
}

void Pipeline::push_forward(ShardThread& t, const Event& e, Lane lane, int depth) {
  ShardThread& dst = *shards_[shard_for(e.program, e.account)];
  SpscRing<Command>& ring = *dst.lanes[lane][t.index];
  in_flight_.fetch_add(1, std::memory_order_acq_rel);
  Command c{e, t.shard->clock_ms()};
  while (!ring.try_push(c)) {
    dst.work_waiter.notify();
    // Make room for whoever waits on us: apply our own inbound legs of this lane and later ones.
    if (drain_lanes(t, lane, depth + 1) == 0) std::this_thread::yield();
  }
  dst.work_waiter.notify();
}

size_t Pipeline::drain_lanes(ShardThread& t, Lane from_lane, int depth) {
  if (depth >= kDepthMax) return 0;
  size_t done = 0;
  for (int lane = kLaneCount - 1; lane >= from_lane; --lane) {
    for (auto& ring : t.lanes[lane]) {
      size_t n = ring->pop_n(t.commands[depth].data(), kBatchEventsMax);
      if (n > 0) done += process(t, t.commands[depth].data(), n, depth);
    }
  }
  return done;
}

// ---- output thread ------------------------------------------------------------------------------
void Pipeline::output_main() {
  std::vector<Effect> batch;
  batch.reserve(config_.sink_batch_effects_max);
  // Per shard: the last seq handed to the sink. Effects recovery replayed count as handed (they
  // are durable already), so a resent transfer leg that depends on one is not held forever.
  std::vector<uint64_t> handed_seq = initial_seq_;
  int spins = 0;
  for (;;) {
    for (auto& t : shards_) {
      SpscRing<Effect>& ring = *t->to_output;
      size_t taken = 0;
      while (batch.size() < config_.sink_batch_effects_max) {
        const Effect* e = ring.peek();
        if (e == nullptr) break;
        // A verdict that depends on another shard's claim waits until that claim is handed out.
        if (e->depends_seq != 0 && handed_seq[e->depends_shard] < e->depends_seq) break;
        batch.push_back(*e);
        ring.pop_peeked();
        ++taken;
        uint64_t& handed = handed_seq[t->index];
        if (batch.back().seq > handed) handed = batch.back().seq;
      }
      if (taken > 0) t->output_space.notify();
    }
    if (!batch.empty()) {
      sink_(batch);
      int64_t n = static_cast<int64_t>(batch.size());
      batch.clear();
      if (effects_queued_.fetch_sub(n, std::memory_order_acq_rel) == n) {
        progress_.fetch_add(1, std::memory_order_release);
        progress_.notify_all();
      }
      spins = 0;
      continue;
    }
    if (stopping_.load(std::memory_order_acquire)) return;
    if (++spins < kSpinsBeforeBlocking) {
      cpu_relax();
      continue;
    }
    uint32_t key = output_waiter_.prepare_wait();
    bool any = false;
    for (auto& t : shards_) any |= !t->to_output->empty_approx();
    if (any || stopping_.load(std::memory_order_seq_cst)) output_waiter_.cancel_wait();
    else output_waiter_.wait(key);
    spins = 0;
  }
}

}  // namespace tally
