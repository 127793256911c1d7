// Tally runtime: the multi-shard pipeline around the engine.
//
//   producers (io threads, feeders) --SPSC ring per producer x shard--> shard threads
//   shard threads --SPSC ring per shard--> output thread --> EffectSink (the durable log, later)
//   shard threads --SPSC lanes per shard x shard--> shard threads (the legs of transfers)
//
// Producers stamp each batch with a server time that never goes backwards (ServerClock) and
// route each event to the shard that owns its account (SlotMap). Each shard thread applies its
// events in arrival order. The output thread hands every effect to the sink in per-shard order,
// and holds an effect whose verdict depends on another shard's claim (Effect::depends_*) until
// that claim has been handed out, so the sink sees a claim before any duplicate verdict it caused.
//
// All rings are bounded: a full ring makes its producer wait (spin, then sleep), never allocate.
// Threads: submit() and tick() from producer threads (one thread per producer index), the sink on
// the output thread, everything else from the owning thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "engine/fraud_set.h"
#include "engine/program.h"
#include "engine/slot_map.h"
#include "engine/runtime/spsc_ring.h"
#include "engine/shard.h"
#include "engine/types.h"

namespace tally {

// What a shard sends for a checkpoint (docs/checkpoints.md): saved slices (SliceRecord records),
// and with the last piece of a round, the shard's state at the cut and the cut's sequence number.
struct CheckpointPiece {
  uint16_t shard = 0;
  uint64_t round = 0;
  std::vector<uint8_t> slices;
  bool done = false;
  std::vector<uint8_t> state;  // when done
  uint64_t cut_seq = 0;        // when done
};
// Called on shard threads.
using CheckpointSink = std::function<void(CheckpointPiece&&)>;

struct PipelineConfig {
  uint16_t shard_count = 1;
  uint16_t producer_count = 1;
  std::vector<Program> programs;
  uint64_t references_max = 10'000'000;  // fraud-set capacity
  size_t producer_ring_events = 8192;     // per producer x shard (power of two)
  size_t output_ring_effects = 16384;     // per shard (power of two)
  size_t lane_ring_events = 4096;         // per shard pair and transfer leg (power of two)
  size_t sink_batch_effects_max = 4096;   // effects per sink call at most
  // Checkpoints: where shards send what they save; slices saved per batch of events (more when
  // idle). Without a sink, request_checkpoint() must not be called.
  CheckpointSink checkpoint_sink;
  size_t checkpoint_slices_per_batch = 64;
};

// Receives effects on the output thread, in per-shard sequence order, dependencies first.
using EffectSink = std::function<void(std::span<const Effect>)>;

class Pipeline {
 public:
  // Called once the shards exist, before any thread starts: recovery replays the log into them.
  using BeforeStart = std::function<void(std::span<Shard* const> shards)>;

  // Starts the shard and output threads. Throws std::invalid_argument for a bad configuration;
  // whatever `before_start` throws propagates (nothing was started).
  Pipeline(PipelineConfig config, EffectSink sink, BeforeStart before_start = {});
  // Drains and stops.
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Producer `producer`'s thread: routes `events`, all stamped `time_ms`, to their shards.
  // Waits while a ring is full.
  void submit(uint16_t producer, std::span<const Event> events, int64_t time_ms);
  // Recovery only: re-sends transfer legs (kTransferIn, kTransferBounce) whose effects were lost
  // with a crash, as the sending shard would have. Producer `producer`'s thread.
  void resend_legs(uint16_t producer, std::span<const Event> legs, int64_t time_ms);
  // Producer `producer`'s thread: a clock tick to every shard (idle shards still expire holds).
  void tick(uint16_t producer, int64_t time_ms);
  // Any thread: every shard takes its cut for checkpoint `round` at its next batch boundary and
  // then sends its pieces to the checkpoint sink. `round` must exceed every earlier one, and the
  // previous round must be finished (every shard sent its done piece).
  void request_checkpoint(uint64_t round);

  // Returns once every event submitted before the call, and every transfer leg it caused, has
  // been applied and its effects handed to the sink. No producer may submit meanwhile.
  void drain();
  // drain(), then stop all threads. Idempotent.
  void stop();

  uint16_t shard_for(uint32_t program, uint64_t account) const { return slots_.shard_for(program, account); }
  uint16_t shard_count() const { return static_cast<uint16_t>(shards_.size()); }
  // A shard's state. Only between drain() and the next submit(), or after stop().
  const Shard& shard(uint16_t i) const;
  const FraudSet& fraud_set() const { return fraud_; }
  // Any thread: a program's totals summed over the shards, as each shard last published them
  // (before handing on the effects of each batch, so an effect anybody has seen is counted).
  // nullopt for a program not in the configuration.
  std::optional<ProgramStats> program_stats(uint32_t program) const;
  // The rules of a configured program; null for another. Any thread (immutable).
  const Program* program(uint32_t id) const;
  // Any thread but a shard's: a member's statement (Shard::statement), read on its shard's thread
  // between two batches, so it includes every event that shard has applied. Waits for it. False
  // for an unknown program or account, or once the pipeline has stopped.
  bool statement(uint32_t program, uint64_t account, Statement* out);

 private:
  struct Command {
    Event event;
    int64_t time_ms;
  };
  enum Lane : int { kLaneIn = 0, kLaneBounce = 1, kLaneCount = 2 };
  struct ShardThread;

  void shard_main(ShardThread& t);
  // `depth`: 0 for a producer batch, 1 and 2 for legs applied while a push waits (see .cpp).
  size_t process(ShardThread& t, const Command* cmds, size_t n, int depth);
  void flush(ShardThread& t, ApplyOutput& out, int depth);
  void push_forward(ShardThread& t, const Event& e, Lane lane, int depth);
  size_t drain_lanes(ShardThread& t, Lane from_lane, int depth);
  void output_main();
  void route(uint16_t producer, std::span<const Event> events, int64_t time_ms, bool internal_allowed);
  void finished_work(int64_t items);
  size_t checkpoint_work(ShardThread& t, bool idle);
  void publish_stats(ShardThread& t);
  struct StatementQuery;
  size_t serve_queries(ShardThread& t, bool answer);  // answer false: "not found" to all

  PipelineConfig config_;
  EffectSink sink_;
  SlotMap slots_;
  FraudSet fraud_;
  std::vector<std::unique_ptr<ShardThread>> shards_;
  std::thread output_thread_;
  std::vector<uint64_t> initial_seq_;  // each shard's last seq when the threads started
  Waiter output_waiter_;

  std::atomic<int64_t> in_flight_{0};      // events submitted or forwarded, not yet applied
  std::atomic<int64_t> effects_queued_{0}; // effects in output rings, not yet through the sink
  std::atomic<uint64_t> progress_{0};      // bumped when work finishes, for drain()
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> checkpoint_round_{0};  // the latest round requested
  bool stopped_ = false;
};

// Names the calling thread (at most 15 characters are kept), for top -H, perf and gdb.
void name_this_thread(const std::string& name);

// A server clock in milliseconds since the epoch that never goes backwards, even when the system
// clock is stepped back: the stamp producers put on batches. Thread-safe.
class ServerClock {
 public:
  int64_t now_ms() {
    int64_t wall = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
    int64_t last = last_ms_.load(std::memory_order_relaxed);
    while (wall > last && !last_ms_.compare_exchange_weak(last, wall, std::memory_order_relaxed)) {
    }
    return wall > last ? wall : last;
  }

 private:
  std::atomic<int64_t> last_ms_{0};
};

}  // namespace tally
