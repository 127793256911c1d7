// Tally engine: one shard of the ledger, the deterministic state machine that decides events.
//
// A Shard owns a disjoint set of accounts (the slot map decides which) and everything local to
// them: per program, the account table, cap windows, action limits, the order table (what refunds
// and replays need) and open holds. It shares only the FraudSet. Given the same events with the
// same stamped times, and the same fraud-set verdicts, it produces the same effects: it reads no
// clock, no file, no socket and starts no thread. Exactly one thread may call a Shard's methods.
//
// Every operation checks in a fixed order (docs/engine.md) and changes nothing until every check
// has passed, the reference claim being the last check; so a rejected event never leaves a
// half-applied change and never consumes its reference.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "engine/flat_table.h"
#include "engine/fraud_set.h"
#include "engine/program.h"
#include "engine/types.h"

namespace tally {

// Totals of one program on one shard. Per program, at every step, summed over shards:
//   issued - redeemed - expired - clawed_back + adjusted - in_transit = sum(available + held + pending)
// where in_transit = transfer_out - transfer_in - transfer_bounced.
struct ProgramStats {
  int64_t issued = 0;        // enroll bonus, earn, award, tier upgrade bonus, stamp card reward, purchase bonus
  int64_t redeemed = 0;      // redeem, capture
  int64_t expired = 0;       // points that lapsed (expiry of lots, inactivity)
  int64_t clawed_back = 0;   // reverse
  int64_t adjusted = 0;      // adjust, signed
  int64_t transfer_out = 0;
  int64_t transfer_in = 0;
  int64_t transfer_bounced = 0;
  uint64_t members = 0;
  uint64_t duplicates = 0;   // events refused as duplicate orders
  uint64_t replays = 0;      // identical retries answered with their original result
  uint64_t events = 0;       // effects emitted (reads excluded)

  int64_t in_transit() const { return transfer_out - transfer_in - transfer_bounced; }
  // What the balances of all members must sum to (available + held + pending): the invariant above.
  int64_t expected_balances() const {
    return issued - redeemed - expired - clawed_back + adjusted - in_transit();
  }
  ProgramStats& operator+=(const ProgramStats& o) {
    issued += o.issued;
    redeemed += o.redeemed;
    expired += o.expired;
    clawed_back += o.clawed_back;
    adjusted += o.adjusted;
    transfer_out += o.transfer_out;
    transfer_in += o.transfer_in;
    transfer_bounced += o.transfer_bounced;
    members += o.members;
    duplicates += o.duplicates;
    replays += o.replays;
    events += o.events;
    return *this;
  }
};

// What one apply call produced: effects in order, and events for other shards (transfer legs),
// which the runtime routes by (program, account).
struct ApplyOutput {
  std::vector<Effect> effects;
  std::vector<Event> forward;
  void clear() {
    effects.clear();
    forward.clear();
  }
};

// One lot on a member's statement.
struct LotLine {
  uint16_t expiry_day = 0;  // the last local day it may be spent on; kNeverDay: never expires
  uint16_t mature_day = 0;  // pending lots: the local day it becomes spendable; 0: spendable
  int64_t points = 0;
};
// A member's points as of the shard's clock, with every maturity and expiry that is due applied
// (as the next event of the member would apply them).
struct Statement {
  AccountState state;
  int64_t as_of_ms = 0;  // the shard's clock: what is due is applied as of this time
  uint16_t last_activity_day = 0;
  uint16_t inactivity_lapse_day = 0;  // the last day before every point lapses; 0: no such rule
  // With a tier window: the last day the member holds this tier unless more points qualify; 0:
  // kept for good (no tier window, or the base tier).
  uint16_t tier_until_day = 0;
  // Stamps on each of the program's stamp cards (below zero: owed); zero for cards it lacks.
  std::array<int16_t, kStampCardsMax> stamps{};
  std::vector<LotLine> lots;          // pending lots by maturity day, then spendable lots by expiry day
};

// Memory held by a shard's tables, for the bytes-per-account and bytes-per-order figures.
struct ShardMemory {
  uint64_t account_bytes = 0;   // account table and cap windows and action limits
  uint64_t order_bytes = 0;     // order tables, both generations, and the hold queue
  uint64_t accounts = 0;
  uint64_t orders = 0;
};

// Account slots the expiry sweep checks per clock tick, and per batch of n events (sweep_budget).
constexpr size_t kSweepSlotsPerTick = 16'384;
size_t sweep_budget(size_t events);

class Shard {
 public:
  // `programs` must outlive the shard; `fraud` is shared by all shards of the process.
  Shard(uint16_t index, std::span<const Program> programs, FraudSet* fraud);
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  // Applies one event stamped with server time `time_ms` (the shard's clock is the largest time it
  // has seen, so it never goes backwards). Appends to out->effects the hold expiries that are due,
  // then the event's own effect (none for a tick); appends transfer legs to out->forward.
  void apply(const Event& event, int64_t time_ms, ApplyOutput* out);

  // apply() for a batch sharing one stamp, overlapping the memory misses of nearby events.
  void apply_batch(std::span<const Event> events, int64_t time_ms, ApplyOutput* out);

  // Recovery and followers: re-applies the event of a logged effect at its logged time, taking the
  // fraud-set verdict from the log (which records who won each reference) instead of racing for
  // it. For a logged hold expiry it applies a tick at that time, which emits the expiries due then.
  // The effects produced must equal the logged ones (the caller compares them: a difference means
  // a corrupt log or rules that differ from those it was written under). Transfer legs are not
  // forwarded: they are in the log as effects of their own shards. Single-threaded use only (the
  // fraud set is filled without synchronisation).
  void apply_logged(const Effect& logged, ApplyOutput* out);

  // Starts loading what apply(e) will touch (account slot, fraud-set group) into the cache.
  void prefetch(const Event& e);

  // Reads one account; false if the program or account is unknown.
  bool account(uint32_t program, uint64_t account, AccountState* state) const;
  // A member's lots; false if the program or account is unknown. Reads only.
  bool statement(uint32_t program, uint64_t account, Statement* out) const;
  // The expiry sweep: checks up to `max_slots` account slots of every program with lots or
  // inactivity expiry for maturities and expiries that are due, emitting their effects. A pass
  // over all accounts starts each local day. Returns the slots checked (0: no pass under way).
  size_t sweep(size_t max_slots, ApplyOutput* out);
  // Calls f(account_id, state) for every account of `program` on this shard (not hot path).
  void for_each_account(uint32_t program,
                        const std::function<void(uint64_t, const AccountState&)>& f) const;

  // ---- checkpoints (docs/checkpoints.md) ------------------------------------------------------
  // The cut. The shard's state as of now (last_seq()) becomes the checkpoint: the small state is
  // returned at once (sequence, clock, per program its statistics, order generation and open
  // holds); the table slices written since the previous cut are saved as they are now, a few per
  // checkpoint_step(), or just before a write would change one (copy on write).
  std::vector<uint8_t> begin_checkpoint();
  // Saves up to `max_slices` pending slices into checkpoint_out(). True when none remain.
  bool checkpoint_step(size_t max_slices);
  bool checkpoint_active() const;
  // Saved slices, as records (SliceRecord); the runtime takes them (swap or clear) as it likes.
  std::vector<uint8_t>& checkpoint_out() { return checkpoint_out_; }

  // Recovery, before the shard has applied anything: the small state of a checkpoint, then its
  // slices, then finish_restore(). Each throws std::runtime_error saying what does not fit (a
  // state of another shard, program set or table capacity).
  void restore_state(std::span<const uint8_t> state);
  void restore_slice(uint32_t program, uint8_t table, uint64_t slice, std::span<const uint8_t> bytes);
  void finish_restore();

  const ProgramStats* stats(uint32_t program) const;
  FraudSet& fraud_set() { return *fraud_; }  // recovery re-enters checkpointed claims
  uint16_t index() const { return index_; }
  uint64_t last_seq() const { return seq_; }
  int64_t clock_ms() const { return now_ms_; }
  ShardMemory memory() const;

  struct AccountRecord;  // 64 bytes; see below
  struct ProgramState;
  struct Lot;  // one lot of a member (shard.cpp)

 private:
  struct Precheck {
    uint64_t fp = 0;        // the event's fingerprint
    void* prior = nullptr;  // the order already holding the event's reference, if any
  };
  struct RateWindow {
    void* window = nullptr;  // the account's cap window, when the program caps
    uint32_t day = 0;
    uint32_t minute = 0;
    int64_t day_points = 0;  // points earned so far today
    bool limited = false;    // the events-per-minute cap is reached
    bool counts = false;     // this kind counts towards it
  };

  ProgramState* find_program(uint32_t id);
  const ProgramState* find_program(uint32_t id) const;
  void expire_holds(ProgramState& ps, ApplyOutput* out);
  Effect& begin_effect(const Event& e, ApplyOutput* out);
  void finish_effect(Effect& eff, const AccountRecord* acc);
  AccountState state_of(const ProgramState& ps, const AccountRecord& acc) const;
  void reject(const Event& e, Result r, const AccountRecord* acc, ApplyOutput* out);
  bool precheck(const Event& e, ProgramState& ps, bool needs_target, Result op_check, Precheck* pc,
                ApplyOutput* out);
  Result claim(const Event& e, ProgramState& ps, const Precheck& pc, Effect& eff);
  FraudSet::ClaimResult logged_claim(const Event& e, FraudSet::Owner* owner);
  void record_order(ProgramState& ps, const Event& e, uint64_t fp, const Effect& eff, int64_t aux,
                    uint16_t lot_day = 0);
  RateWindow rate_window(ProgramState& ps, const Event& e);
  void commit_rate_window(const RateWindow& rw, int64_t points);
  static Ref128 leg_origin(const Effect& sender);
  void depend_on_origin(const Event& leg, Effect& eff);
  void touch(ProgramState& ps, AccountRecord* acc);

  // Lots (docs/programs.md "Lots, pending points and expiry"); all no-ops on available alone in a
  // program without lots.
  bool due(const ProgramState& ps, const AccountRecord& a) const;
  void process_due(ProgramState& ps, AccountRecord* acc, ApplyOutput* out);
  void emit_lifecycle(ProgramState& ps, AccountRecord* acc, EventKind kind, ExpireReason why, int64_t points,
                      ApplyOutput* out);
  void emit_reward(ProgramState& ps, AccountRecord* acc, EventKind kind, uint16_t code, int64_t bonus,
                   uint16_t bonus_day, ApplyOutput* out);
  int64_t base_day(const ProgramState& ps, const Event& e) const;
  bool lot_room(const ProgramState& ps, uint64_t account, uint16_t day, bool pending) const;
  size_t load_lots(const ProgramState& ps, uint64_t account, std::vector<Lot>* out) const;
  void store_lots(ProgramState& ps, AccountRecord* acc, size_t had, size_t n);
  size_t put_lot(ProgramState& ps, size_t n, uint16_t day, bool pending, int64_t points);
  void add_lot(ProgramState& ps, AccountRecord* acc, uint16_t expiry, int64_t points);
  void add_pending(ProgramState& ps, AccountRecord* acc, uint16_t mature, int64_t points);
  uint16_t take_lots(ProgramState& ps, AccountRecord* acc, int64_t points);
  int64_t take_from_lot(ProgramState& ps, AccountRecord* acc, uint16_t day, bool pending, int64_t max);
  void claw_back(ProgramState& ps, AccountRecord* acc, uint16_t base, int64_t points);

  void on_enroll(const Event& e, ProgramState& ps, ApplyOutput* out);
  void on_earn_or_award(const Event& e, ProgramState& ps, ApplyOutput* out);
  void on_redeem_or_hold(const Event& e, ProgramState& ps, ApplyOutput* out);
  void on_capture_or_void(const Event& e, ProgramState& ps, ApplyOutput* out);
  void on_reverse(const Event& e, ProgramState& ps, ApplyOutput* out);
  void on_adjust(const Event& e, ProgramState& ps, ApplyOutput* out);
  void on_transfer(const Event& e, ProgramState& ps, ApplyOutput* out);
  void on_transfer_in(const Event& e, ProgramState& ps, ApplyOutput* out);
  void on_transfer_bounce(const Event& e, ProgramState& ps, ApplyOutput* out);
  void on_balance(const Event& e, ProgramState& ps, ApplyOutput* out);
  void on_membership(const Event& e, ProgramState& ps, ApplyOutput* out);

  uint16_t index_;
  FraudSet* fraud_;
  std::vector<std::unique_ptr<ProgramState>> programs_;  // sorted by program id
  uint64_t seq_ = 0;
  int64_t now_ms_ = 0;
  const Effect* logged_ = nullptr;  // set during apply_logged()
  std::vector<uint8_t> checkpoint_out_;
};

// One saved slice in Shard::checkpoint_out(): program u32, table u8, slice u64, length u32 and
// the slice's bytes (the table's slots as in memory; length 0: no entry in the slice).
struct SliceRecord {
  uint32_t program = 0;
  uint8_t table = 0;  // 0 accounts, 1 cap windows, 2 action limits, 3 and 4 the order generations
  uint64_t slice = 0;
  std::span<const uint8_t> bytes;
};
constexpr size_t kSliceRecordHeader = 17;
// Reads the next record from *in, advancing it; false at the end or on a truncated record.
bool next_slice_record(std::span<const uint8_t>* in, SliceRecord* r);

// Account state as stored in a shard's table; public so tools and tests can read it. One cache line.
struct Shard::AccountRecord {
  uint64_t id;  // 0 = empty slot
  int64_t available;  // in a program with lots: the sum of its lots, or below zero (owed) with none
  int64_t held;
  int64_t lifetime_earned;
  int64_t lifetime_redeemed;
  int64_t qualifying;
  int64_t pending;             // the sum of its pending lots
  uint16_t last_activity_day;  // program-local day of the last mutating event
  uint16_t lot_first;          // expiry day of its earliest lot (0 = no lot)
  uint16_t pending_first;      // maturity day of its earliest pending lot (0 = none)
  uint8_t tier;
  uint8_t flags;
};
static_assert(sizeof(Shard::AccountRecord) == 64);

AccountState to_state(const Shard::AccountRecord& a);

}  // namespace tally
