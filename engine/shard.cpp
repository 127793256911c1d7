// The shard state machine. Map of this file:
//   1. side-table records and their traits (orders, cap windows, action limits, hold queue)
//   2. ProgramState: everything one program keeps on one shard
//   3. apply(): clock, generations, hold expiry, dispatch
//   4. shared steps: precheck (validation, staleness, replay), claim, effect bookkeeping
//   5. one function per operation, each: checks in precedence order, claim, then mutate
#include "engine/shard.h"

#include <xxhash.h>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

namespace tally {

// ---- 1. side-table records ---------------------------------------------------------------------
namespace {

struct AccountTraits {
  using Key = uint64_t;
  static uint64_t hash(uint64_t k) { return mix64(k); }
  static uint64_t key(const Shard::AccountRecord& e) { return e.id; }
  static bool is_empty(const Shard::AccountRecord& e) { return e.id == 0; }
  static void init(Shard::AccountRecord& e, uint64_t k) {
    e = {};
    e.id = k;
  }
};

enum class OrderState : uint8_t { kOpen = 0, kCaptured = 1, kVoided = 2, kExpired = 3, kBounced = 4 };

// What a later event may need of an earlier one: a replay its result, a reverse the order's
// amount and points, a capture or void the hold. 64 bytes.
struct OrderRecord {
  Ref128 ref;
  uint64_t account;
  uint64_t fingerprint;
  int64_t amount;    // earn: minor units; hold, transfer: points
  int64_t points;    // the original effect's points, returned on replay
  int64_t aux;       // earn: minor units refunded so far; hold: expiry time (ms)
  uint32_t time_s;   // server time of the order
  EventKind kind;
  Result result;
  OrderState state;
  uint8_t effect_flags;  // the original effect's flags (kEffectCapped), returned on replay
};
static_assert(sizeof(OrderRecord) == 64);

struct RefTraits {
  using Key = Ref128;
  static uint64_t hash(const Ref128& k) { return XXH3_64bits(&k, sizeof(k)); }
  static Ref128 key(const OrderRecord& e) { return e.ref; }
  static bool is_empty(const OrderRecord& e) { return e.ref.empty(); }
  static void init(OrderRecord& e, const Ref128& k) {
    e = {};
    e.ref = k;
  }
};

// Per-account cap windows: earned points of the current local day, events of the current minute.
struct CapWindow {
  uint64_t id;
  int64_t day_points;
  uint32_t day;
  uint32_t minute;
  uint32_t minute_events;
  uint32_t reserved;
};
static_assert(sizeof(CapWindow) == 32);

struct CapTraits {
  using Key = uint64_t;
  static uint64_t hash(uint64_t k) { return mix64(k); }
  static uint64_t key(const CapWindow& e) { return e.id; }
  static bool is_empty(const CapWindow& e) { return e.id == 0; }
  static void init(CapWindow& e, uint64_t k) {
    e = {};
    e.id = k;
  }
};

struct ActionKey {
  uint64_t account;
  uint16_t action;
  friend bool operator==(const ActionKey&, const ActionKey&) = default;
};

// Awards of one action to one account in the current limit window.
struct ActionWindow {
  uint64_t account;
  uint16_t action;
  uint16_t count;
  uint32_t window_start_day;
};
static_assert(sizeof(ActionWindow) == 16);

struct ActionTraits {
  using Key = ActionKey;
  static uint64_t hash(const ActionKey& k) { return mix64(k.account * 8 + k.action); }
  static ActionKey key(const ActionWindow& e) { return {e.account, e.action}; }
  static bool is_empty(const ActionWindow& e) { return e.account == 0; }
  static void init(ActionWindow& e, const ActionKey& k) {
    e = {};
    e.account = k.account;
    e.action = k.action;
  }
};

struct HoldDue {
  int64_t expires_ms;
  Ref128 ref;
};

using AccountTable = FlatTable<Shard::AccountRecord, AccountTraits>;
using OrderTable = FlatTable<OrderRecord, RefTraits>;

// The receiver's leg of a transfer has its own key in the receiver's order table (sender and
// receiver may share a shard, and the sender's table holds the transfer under its reference).
Ref128 transfer_in_key(const Ref128& ref) {
  XXH128_hash_t h = XXH3_128bits_withSeed(&ref, sizeof(ref), 0x7472616e73666572ULL /* "transfer" */);
  return {h.low64, h.high64};
}

uint8_t tier_for(const Program& p, int64_t qualifying, uint8_t current) {
  uint8_t t = current;
  while (t + 1 < p.tier_count && qualifying >= p.tiers[t + 1].threshold_points) ++t;
  return t;
}

// floor(points * part / whole), exact for all int64 inputs with 0 <= part <= whole.
int64_t pro_rata(int64_t points, int64_t part, int64_t whole) {
  return static_cast<int64_t>(static_cast<int128>(points) * part / whole);
}

bool counts_for_rate(EventKind k) {
  return k == EventKind::kEarn || k == EventKind::kAward || k == EventKind::kRedeem ||
         k == EventKind::kHold || k == EventKind::kTransfer;
}

}  // namespace

AccountState to_state(const Shard::AccountRecord& a) {
  AccountState s;
  s.available = a.available;
  s.held = a.held;
  s.lifetime_earned = a.lifetime_earned;
  s.lifetime_redeemed = a.lifetime_redeemed;
  s.qualifying = a.qualifying;
  s.tier = a.tier;
  s.flags = a.flags;
  return s;
}

// ---- 2. ProgramState ----------------------------------------------------------------------------
// Table ids in checkpoints (SliceRecord::table).
enum : uint8_t { kTableAccounts = 0, kTableCaps = 1, kTableActions = 2, kTableOrdersA = 3, kTableOrdersB = 4,
                 kTableCount = 5 };

// Where a program's tables send their checkpoint slices: records appended to the shard's buffer.
struct SliceOut final : SliceSink {
  uint32_t program = 0;
  std::vector<uint8_t>* out = nullptr;
  void save_slice(uint8_t table, uint64_t slice, const void* bytes, size_t len) override {
    uint8_t h[kSliceRecordHeader];
    uint32_t l = static_cast<uint32_t>(len);
    std::memcpy(h, &program, 4);
    h[4] = table;
    std::memcpy(h + 5, &slice, 8);
    std::memcpy(h + 13, &l, 4);
    out->insert(out->end(), h, h + sizeof(h));
    const auto* b = static_cast<const uint8_t*>(bytes);
    out->insert(out->end(), b, b + len);
  }
};

struct Shard::ProgramState {
  ProgramState(const Program& p, std::vector<uint8_t>* checkpoint_out)
      : rules(&p), accounts(p.accounts_max), hold_ring(p.holds_open_max) {
    orders[0] = std::make_unique<OrderTable>(p.orders_max);
    orders[1] = std::make_unique<OrderTable>(p.orders_max);
    if (p.points_per_day_max > 0 || p.events_per_minute_max > 0)
      caps = std::make_unique<FlatTable<CapWindow, CapTraits>>(p.accounts_max);
    bool any_limit = std::any_of(p.actions.begin(), p.actions.end(),
                                 [](const ActionRule& r) { return r.limit_count > 0; });
    if (any_limit) action_limits = std::make_unique<FlatTable<ActionWindow, ActionTraits>>(p.accounts_max);
    slice_out.program = p.id;
    slice_out.out = checkpoint_out;
    accounts.set_slice_sink(&slice_out, kTableAccounts);
    if (caps) caps->set_slice_sink(&slice_out, kTableCaps);
    if (action_limits) action_limits->set_slice_sink(&slice_out, kTableActions);
    orders[0]->set_slice_sink(&slice_out, kTableOrdersA);
    orders[1]->set_slice_sink(&slice_out, kTableOrdersB);
    order_ids[0] = kTableOrdersA;
    order_ids[1] = kTableOrdersB;
  }

  // Calls f(table id, table) for each table the program has (f is generic over the table type).
  template <class F>
  void for_each_table(F&& f) {
    f(kTableAccounts, accounts);
    if (caps) f(kTableCaps, *caps);
    if (action_limits) f(kTableActions, *action_limits);
    f(order_ids[0], *orders[0]);
    f(order_ids[1], *orders[1]);
  }

  OrderRecord* find_order(const Ref128& ref) {
    OrderRecord* o = orders[0]->find(ref);
    return o != nullptr ? o : orders[1]->find(ref);
  }

  const Program* rules;
  AccountTable accounts;
  std::unique_ptr<FlatTable<CapWindow, CapTraits>> caps;              // when the program caps
  std::unique_ptr<FlatTable<ActionWindow, ActionTraits>> action_limits;  // when actions are limited
  // Orders by generation: [0] current, [1] previous. A generation lasts one refund window, so an
  // order is remembered for at least one window and at most two; then dropped whole.
  std::unique_ptr<OrderTable> orders[2];
  int64_t generation_start_ms = -1;
  std::vector<HoldDue> hold_ring;  // holds in expiry order (the timeout is per program: FIFO)
  size_t hold_head = 0;
  size_t hold_count = 0;
  ProgramStats stats;
  SliceOut slice_out;
  uint8_t order_ids[2];  // checkpoint table ids of orders[0] and orders[1] (they swap)
};

Shard::Shard(uint16_t index, std::span<const Program> programs, FraudSet* fraud)
    : index_(index), fraud_(fraud) {
  for (const Program& p : programs) programs_.push_back(std::make_unique<ProgramState>(p, &checkpoint_out_));
  std::sort(programs_.begin(), programs_.end(),
            [](const auto& a, const auto& b) { return a->rules->id < b->rules->id; });
}

Shard::~Shard() = default;

Shard::ProgramState* Shard::find_program(uint32_t id) {
  auto it = std::lower_bound(programs_.begin(), programs_.end(), id,
                             [](const auto& ps, uint32_t v) { return ps->rules->id < v; });
  return it != programs_.end() && (*it)->rules->id == id ? it->get() : nullptr;
}
const Shard::ProgramState* Shard::find_program(uint32_t id) const {
  return const_cast<Shard*>(this)->find_program(id);
}

// ---- 3. apply -----------------------------------------------------------------------------------
void Shard::apply(const Event& e, int64_t time_ms, ApplyOutput* out) {
  now_ms_ = std::max(now_ms_, time_ms);
  if (e.kind == EventKind::kTick) {
    for (auto& ps : programs_) expire_holds(*ps, out);
    return;
  }
  ProgramState* ps = find_program(e.program);
  if (ps == nullptr) {
    Effect& eff = begin_effect(e, out);
    eff.result = Result::kProgramNotFound;
    finish_effect(eff, nullptr);
    return;
  }
  expire_holds(*ps, out);
  switch (e.kind) {
    case EventKind::kEnroll: return on_enroll(e, *ps, out);
    case EventKind::kEarn:
    case EventKind::kAward: return on_earn_or_award(e, *ps, out);
    case EventKind::kRedeem:
    case EventKind::kHold: return on_redeem_or_hold(e, *ps, out);
    case EventKind::kCapture:
    case EventKind::kVoid: return on_capture_or_void(e, *ps, out);
    case EventKind::kReverse: return on_reverse(e, *ps, out);
    case EventKind::kAdjust: return on_adjust(e, *ps, out);
    case EventKind::kTransfer: return on_transfer(e, *ps, out);
    case EventKind::kTransferIn: return on_transfer_in(e, *ps, out);
    case EventKind::kTransferBounce: return on_transfer_bounce(e, *ps, out);
    case EventKind::kBalance: return on_balance(e, *ps, out);
    default: {
      Effect& eff = begin_effect(e, out);
      eff.result = Result::kInvalidKind;
      finish_effect(eff, nullptr);
    }
  }
}

void Shard::prefetch(const Event& e) {
  ProgramState* ps = find_program(e.program);
  if (ps == nullptr) return;
  ps->accounts.prefetch(e.account);
  if (!e.ref.empty()) {
    fraud_->prefetch(e.program, e.ref);
    // Where record_order() will write. Not for reading: precheck() probes the order tables only
    // for references the fraud set holds, which are rare.
    ps->orders[0]->prefetch_for_write(e.ref);
  }
}

void Shard::apply_batch(std::span<const Event> events, int64_t time_ms, ApplyOutput* out) {
  constexpr size_t kPrefetchDistance = 8;
  for (size_t i = 0; i < std::min(events.size(), kPrefetchDistance); ++i) prefetch(events[i]);
  for (size_t i = 0; i < events.size(); ++i) {
    if (i + kPrefetchDistance < events.size()) prefetch(events[i + kPrefetchDistance]);
    apply(events[i], time_ms, out);
  }
}

// Rotates order generations, then expires every hold whose time has come, oldest first.
void Shard::expire_holds(ProgramState& ps, ApplyOutput* out) {
  // Generations start at whole multiples of the refund window (server time since the epoch), so
  // when they turn depends on the clock alone, not on which event or tick came first: a replay of
  // the log, which has no ticks, turns them at the same points.
  const int64_t window = ps.rules->refund_window_ms;
  const int64_t start = now_ms_ - now_ms_ % window;
  if (ps.generation_start_ms < 0) ps.generation_start_ms = start;
  if (start > ps.generation_start_ms) {
    std::swap(ps.orders[0], ps.orders[1]);
    std::swap(ps.order_ids[0], ps.order_ids[1]);
    ps.orders[0]->clear();
    // More than one window without an event: the previous generation is past both windows too.
    if (start - ps.generation_start_ms > window) ps.orders[1]->clear();
    ps.generation_start_ms = start;
  }
  while (ps.hold_count > 0 && ps.hold_ring[ps.hold_head].expires_ms <= now_ms_) {
    HoldDue due = ps.hold_ring[ps.hold_head];
    ps.hold_head = (ps.hold_head + 1) % ps.hold_ring.size();
    --ps.hold_count;
    OrderRecord* hold = ps.find_order(due.ref);
    if (hold == nullptr || hold->kind != EventKind::kHold || hold->state != OrderState::kOpen) continue;
    AccountRecord* acc = ps.accounts.find(hold->account);
    assert(acc != nullptr);
    acc->held -= hold->amount;
    acc->available += hold->amount;
    hold->state = OrderState::kExpired;
    Event ev{};
    ev.kind = EventKind::kHoldExpire;
    ev.ref = due.ref;
    ev.program = ps.rules->id;
    ev.account = hold->account;
    ev.amount = hold->amount;
    Effect& eff = begin_effect(ev, out);
    eff.points = hold->amount;
    finish_effect(eff, acc);
  }
}

// ---- 4. shared steps ----------------------------------------------------------------------------
Effect& Shard::begin_effect(const Event& e, ApplyOutput* out) {
  Effect& eff = out->effects.emplace_back();
  eff.event = e;
  eff.time_ms = now_ms_;
  eff.shard = index_;
  // A read is tagged with the last sequence it observed and takes none of its own.
  eff.seq = e.kind == EventKind::kBalance ? seq_ : ++seq_;
  return eff;
}

void Shard::finish_effect(Effect& eff, const AccountRecord* acc) {
  if (acc != nullptr) {
    eff.state = to_state(*acc);
  } else {
    eff.flags |= kEffectNoAccount;
  }
  if (eff.event.kind == EventKind::kBalance) return;
  if (ProgramState* ps = find_program(eff.event.program)) ++ps->stats.events;
}

namespace {

// The business time an event is judged by: its own, or the server time when it has none.
int64_t business_time(const Event& e, int64_t now_ms) {
  return e.business_time_ms != 0 ? e.business_time_ms : now_ms;
}

uint16_t business_day(const Event& e, int64_t now_ms) { return reference_day(e, now_ms); }

}  // namespace

// Shared opening of every client operation that writes. Checks, in order: account id, references,
// `op_check` (the operation's own validation of amounts and codes), business time and staleness;
// then answers an identical retry with the original result. Returns true when the event has been
// answered; otherwise *fp is its fingerprint and *prior the order already holding its reference.
bool Shard::precheck(const Event& e, ProgramState& ps, bool needs_target, Result op_check,
                     Precheck* pc, ApplyOutput* out) {
  Result r = Result::kOk;
  int64_t bt = business_time(e, now_ms_);
  if (e.account == 0 || (e.kind == EventKind::kTransfer && e.counterparty == 0)) {
    r = Result::kInvalidAccount;
  } else if (e.ref.empty() || (needs_target && e.target.empty())) {
    r = Result::kInvalidReference;
  } else if (op_check != Result::kOk) {
    r = op_check;
  } else if (bt > now_ms_ + ps.rules->future_skew_ms_max) {
    r = Result::kInvalidTime;
  } else if (bt < now_ms_ - ps.rules->dedup_window_ms) {
    r = Result::kStaleReference;
  }
  if (r != Result::kOk) {
    Effect& eff = begin_effect(e, out);
    eff.result = r;
    finish_effect(eff, r == Result::kInvalidAccount ? nullptr : ps.accounts.find(e.account));
    return true;
  }
  pc->fp = fingerprint(e);
  // Every reference in an order table was claimed in the fraud set first, and the fraud set keeps
  // it longer (dedup window >= refund window), so a reference the fraud set does not hold has no
  // prior order here: most events skip both order-table probes (two cache misses; the fraud-set
  // probe was prefetched and the claim needs it anyway).
  OrderRecord* prior = nullptr;
  if (fraud_->find(e.program, e.ref).found) {
    prior = ps.find_order(e.ref);
  } else {
    assert(ps.find_order(e.ref) == nullptr);
  }
  pc->prior = prior;
  if (prior != nullptr && prior->fingerprint == pc->fp) {
    Effect& eff = begin_effect(e, out);
    eff.result = prior->result;
    eff.points = prior->points;
    eff.flags |= kEffectReplay | prior->effect_flags;
    ++ps.stats.replays;
    finish_effect(eff, ps.accounts.find(e.account));
    return true;
  }
  return false;
}

// The last check: the reference must be free, here and on every shard. On success the caller must
// apply the event (nothing after this may fail) and record it with record_order().
Result Shard::claim(const Event& e, ProgramState& ps, const Precheck& pc, Effect& eff) {
  if (pc.prior != nullptr) {  // this shard's own earlier, different event
    eff.result = Result::kDuplicateOrder;
    ++ps.stats.duplicates;
    return eff.result;
  }
  if (ps.orders[0]->size() >= ps.orders[0]->capacity_max()) {
    return eff.result = Result::kCapacityExhausted;
  }
  FraudSet::Owner owner;
  FraudSet::ClaimResult verdict =
      logged_ != nullptr ? logged_claim(e, &owner)
                         : fraud_->claim(e.program, e.ref, index_, eff.seq, business_day(e, now_ms_), &owner);
  switch (verdict) {
    case FraudSet::ClaimResult::kClaimed:
      eff.flags |= kEffectClaimed;
      return eff.result = Result::kOk;
    case FraudSet::ClaimResult::kTaken:
      // Released only once that claim is durable (and ordered). Sequence 0: the claim was
      // re-entered by recovery, so it is durable already.
      if (owner.shard != index_ && owner.seq != 0) {
        eff.depends_shard = owner.shard;
        eff.depends_seq = owner.seq;
      }
      ++ps.stats.duplicates;
      return eff.result = Result::kDuplicateOrder;
    case FraudSet::ClaimResult::kFull:
      break;
  }
  return eff.result = Result::kCapacityExhausted;
}

// Replay: the fraud-set verdict the log recorded. The log says who won each reference, so the
// result does not depend on how the shards' threads interleaved when it was written.
FraudSet::ClaimResult Shard::logged_claim(const Event& e, FraudSet::Owner* owner) {
  const Effect& f = *logged_;
  if (f.flags & kEffectClaimed) {
    if (fraud_->insert_unsynchronised(e.program, e.ref, index_, business_day(e, now_ms_)))
      return FraudSet::ClaimResult::kClaimed;
    *owner = fraud_->find(e.program, e.ref);  // held already, or no room: the replay will not match
    return owner->found ? FraudSet::ClaimResult::kTaken : FraudSet::ClaimResult::kFull;
  }
  if (f.result == Result::kDuplicateOrder) {
    *owner = {true, f.depends_seq != 0 ? f.depends_shard : index_, f.depends_seq};
    return FraudSet::ClaimResult::kTaken;
  }
  return FraudSet::ClaimResult::kFull;
}

void Shard::apply_logged(const Effect& logged, ApplyOutput* out) {
  logged_ = &logged;
  if (logged.event.kind == EventKind::kHoldExpire) {
    Event tick{};
    tick.kind = EventKind::kTick;
    apply(tick, logged.time_ms, out);
  } else {
    apply(logged.event, logged.time_ms, out);
  }
  logged_ = nullptr;
  out->forward.clear();  // legs are in the log as effects of their own shards
}

void Shard::record_order(ProgramState& ps, const Event& e, uint64_t fp, const Effect& eff,
                         int64_t aux) {
  bool created = false;
  OrderRecord* o = ps.orders[0]->insert(e.ref, &created);
  assert(o != nullptr && created);  // capacity was checked by claim()
  o->account = e.account;
  o->fingerprint = fp;
  o->amount = e.amount;
  o->points = eff.points;
  o->aux = aux;
  o->time_s = static_cast<uint32_t>(now_ms_ / 1000);
  o->kind = e.kind;
  o->result = eff.result;
  o->state = OrderState::kOpen;
  o->effect_flags = eff.flags & kEffectCapped;
}

// Answers with `r` without changing anything; `acc` may be null.
void Shard::reject(const Event& e, Result r, const AccountRecord* acc, ApplyOutput* out) {
  Effect& eff = begin_effect(e, out);
  eff.result = r;
  finish_effect(eff, acc);
}

void Shard::touch(AccountRecord* acc) { acc->last_activity_s = static_cast<uint32_t>(now_ms_ / 1000); }

// ---- 5. operations ------------------------------------------------------------------------------
void Shard::on_enroll(const Event& e, ProgramState& ps, ApplyOutput* out) {
  Precheck pc;
  if (precheck(e, ps, false, e.amount != 0 ? Result::kInvalidAmount : Result::kOk, &pc, out)) return;
  if (AccountRecord* existing = ps.accounts.find(e.account)) {
    return reject(e, Result::kAccountExists, existing, out);
  }
  if (ps.accounts.size() >= ps.accounts.capacity_max()) {
    return reject(e, Result::kCapacityExhausted, nullptr, out);
  }
  Effect& eff = begin_effect(e, out);
  if (claim(e, ps, pc, eff) != Result::kOk) return finish_effect(eff, nullptr);
  bool created = false;
  AccountRecord* acc = ps.accounts.insert(e.account, &created);
  const Program& p = *ps.rules;
  acc->available = p.signup_bonus_points;
  acc->lifetime_earned = p.signup_bonus_points;
  acc->created_day = static_cast<uint16_t>(now_ms_ / kMsPerDay);
  acc->tier = tier_for(p, 0, 0);
  touch(acc);
  eff.points = p.signup_bonus_points;
  ps.stats.issued += p.signup_bonus_points;
  ++ps.stats.members;
  record_order(ps, e, pc.fp, eff, 0);
  finish_effect(eff, acc);
}

void Shard::on_earn_or_award(const Event& e, ProgramState& ps, ApplyOutput* out) {
  const Program& p = *ps.rules;
  const bool earn = e.kind == EventKind::kEarn;
  Result op = Result::kOk;
  if (earn) {
    if (e.amount <= 0 || e.amount > kPointsMax) op = Result::kInvalidAmount;
    else if (e.currency != 0 && e.currency != p.currency) op = Result::kCurrencyMismatch;
  } else if (e.code == 0 || e.code >= kActionKindCount || p.actions[e.code].points <= 0) {
    op = Result::kInvalidCode;
  } else if (e.amount != 0) {
    op = Result::kInvalidAmount;
  }
  Precheck pc;
  if (precheck(e, ps, false, op, &pc, out)) return;
  AccountRecord* acc = ps.accounts.find(e.account);
  if (acc == nullptr) return reject(e, Result::kAccountNotFound, nullptr, out);

  RateWindow rw = rate_window(ps, e);
  if (rw.limited) return reject(e, Result::kRateLimited, acc, out);
  ActionWindow* aw = nullptr;
  uint32_t today = static_cast<uint32_t>(local_day(p, now_ms_));
  if (!earn) {
    const ActionRule& rule = p.actions[e.code];
    if (rule.limit_count > 0) {
      bool created = false;
      aw = ps.action_limits->insert({e.account, e.code}, &created);
      if (aw == nullptr) return reject(e, Result::kCapacityExhausted, acc, out);
      bool window_open = aw->count > 0 && today - aw->window_start_day < rule.limit_period_days;
      if (window_open && aw->count >= rule.limit_count) {
        return reject(e, Result::kActionLimitReached, acc, out);
      }
    }
  }
  // Points: rate x tier multiplier, one floor at the end; then the per-event and per-day caps,
  // computed in 128 bits so a huge uncut figure is cut before the range is checked.
  int128 points_wide = 0;
  if (earn) {
    int128 num = static_cast<int128>(e.amount) * p.earn_points * p.tiers[acc->tier].multiplier_permille;
    points_wide = num / (static_cast<int128>(p.earn_per_minor) * 1000);
  } else {
    points_wide = p.actions[e.code].points;
  }
  bool capped = false;
  if (earn && p.earn_points_max > 0 && points_wide > p.earn_points_max) {
    points_wide = p.earn_points_max;
    capped = true;
  }
  if (p.points_per_day_max > 0) {
    int64_t left = p.points_per_day_max - rw.day_points;
    if (left <= 0 && points_wide > 0) return reject(e, Result::kCapExceeded, acc, out);
    if (points_wide > left) {
      points_wide = left;
      capped = true;
    }
  }
  if (points_wide > kPointsMax) return reject(e, Result::kOverflow, acc, out);
  const int64_t points = static_cast<int64_t>(points_wide);
  if (acc->available + points > kPointsMax || acc->lifetime_earned + points > kPointsMax) {
    return reject(e, Result::kOverflow, acc, out);
  }
  Effect& eff = begin_effect(e, out);
  if (claim(e, ps, pc, eff) != Result::kOk) return finish_effect(eff, acc);
  acc->available += points;
  acc->lifetime_earned += points;
  if (earn) {
    acc->qualifying += points;
    acc->tier = tier_for(p, acc->qualifying, acc->tier);
  }
  touch(acc);
  commit_rate_window(rw, points);
  if (aw != nullptr) {
    if (aw->count == 0 || today - aw->window_start_day >= p.actions[e.code].limit_period_days) {
      aw->window_start_day = today;
      aw->count = 0;
    }
    ++aw->count;
  }
  ps.stats.issued += points;
  eff.points = points;
  if (capped) eff.flags |= kEffectCapped;
  record_order(ps, e, pc.fp, eff, 0);
  finish_effect(eff, acc);
}

void Shard::on_redeem_or_hold(const Event& e, ProgramState& ps, ApplyOutput* out) {
  const Program& p = *ps.rules;
  const bool hold = e.kind == EventKind::kHold;
  Precheck pc;
  Result op = e.amount <= 0 || e.amount > kPointsMax ? Result::kInvalidAmount : Result::kOk;
  if (precheck(e, ps, false, op, &pc, out)) return;
  AccountRecord* acc = ps.accounts.find(e.account);
  if (acc == nullptr) return reject(e, Result::kAccountNotFound, nullptr, out);
  RateWindow rw = rate_window(ps, e);
  if (rw.limited) return reject(e, Result::kRateLimited, acc, out);
  if (!hold && e.amount < p.redeem_points_min) return reject(e, Result::kBelowMinimum, acc, out);
  if (acc->available < e.amount) return reject(e, Result::kInsufficientPoints, acc, out);
  if (hold && ps.hold_count >= ps.hold_ring.size()) {
    return reject(e, Result::kCapacityExhausted, acc, out);
  }
  Effect& eff = begin_effect(e, out);
  if (claim(e, ps, pc, eff) != Result::kOk) return finish_effect(eff, acc);
  acc->available -= e.amount;
  int64_t expires_ms = 0;
  if (hold) {
    acc->held += e.amount;
    expires_ms = now_ms_ + p.hold_timeout_ms;
    ps.hold_ring[(ps.hold_head + ps.hold_count) % ps.hold_ring.size()] = {expires_ms, e.ref};
    ++ps.hold_count;
  } else {
    acc->lifetime_redeemed += e.amount;
    ps.stats.redeemed += e.amount;
  }
  touch(acc);
  commit_rate_window(rw, 0);
  eff.points = e.amount;
  record_order(ps, e, pc.fp, eff, expires_ms);
  finish_effect(eff, acc);
}

void Shard::on_capture_or_void(const Event& e, ProgramState& ps, ApplyOutput* out) {
  const bool capture = e.kind == EventKind::kCapture;
  Result op = Result::kOk;
  if (capture ? (e.amount < 0 || e.amount > kPointsMax) : e.amount != 0) op = Result::kInvalidAmount;
  Precheck pc;
  if (precheck(e, ps, true, op, &pc, out)) return;
  AccountRecord* acc = ps.accounts.find(e.account);
  if (acc == nullptr) return reject(e, Result::kAccountNotFound, nullptr, out);
  OrderRecord* hold = ps.find_order(e.target);
  if (hold == nullptr || hold->kind != EventKind::kHold || hold->account != e.account ||
      hold->result != Result::kOk) {
    return reject(e, Result::kHoldNotFound, acc, out);
  }
  if (hold->state == OrderState::kExpired) return reject(e, Result::kHoldExpired, acc, out);
  if (hold->state != OrderState::kOpen) return reject(e, Result::kHoldClosed, acc, out);
  int64_t captured = capture ? (e.amount == 0 ? hold->amount : e.amount) : 0;
  if (captured > hold->amount) return reject(e, Result::kInvalidAmount, acc, out);
  Effect& eff = begin_effect(e, out);
  if (claim(e, ps, pc, eff) != Result::kOk) return finish_effect(eff, acc);
  acc->held -= hold->amount;
  acc->available += hold->amount - captured;
  acc->lifetime_redeemed += captured;
  ps.stats.redeemed += captured;
  hold->state = capture ? OrderState::kCaptured : OrderState::kVoided;
  touch(acc);
  eff.points = capture ? captured : hold->amount;
  record_order(ps, e, pc.fp, eff, 0);
  finish_effect(eff, acc);
}

// Refund policy: the points clawed back for a refund are the order's points pro rata to the money
// refunded so far (floor), minus what earlier refunds of it already took; a full refund takes them
// all. If the member has spent them, the balance goes below zero: the member earns it back before
// redeeming again, so spending the points and then refunding the purchase gains nothing.
void Shard::on_reverse(const Event& e, ProgramState& ps, ApplyOutput* out) {
  const Program& p = *ps.rules;
  Result op = Result::kOk;
  if (e.amount < 0 || e.amount > kPointsMax) op = Result::kInvalidAmount;
  else if (e.currency != 0 && e.currency != p.currency) op = Result::kCurrencyMismatch;
  Precheck pc;
  if (precheck(e, ps, true, op, &pc, out)) return;
  AccountRecord* acc = ps.accounts.find(e.account);
  if (acc == nullptr) return reject(e, Result::kAccountNotFound, nullptr, out);
  OrderRecord* order = ps.find_order(e.target);
  if (order == nullptr || order->account != e.account || order->result != Result::kOk) {
    return reject(e, Result::kOrderNotFound, acc, out);
  }
  if (order->kind != EventKind::kEarn) return reject(e, Result::kNotReversible, acc, out);
  int64_t remaining = order->amount - order->aux;
  if (remaining == 0) return reject(e, Result::kAlreadyReversed, acc, out);
  // Windows are counted in whole seconds of server time (orders keep their time in seconds).
  if (now_ms_ / 1000 > int64_t{order->time_s} + p.refund_window_ms / 1000) {
    return reject(e, Result::kRefundWindowPassed, acc, out);
  }
  int64_t refund = e.amount == 0 ? remaining : e.amount;
  if (refund > remaining) return reject(e, Result::kInvalidAmount, acc, out);
  int64_t back = pro_rata(order->points, order->aux + refund, order->amount) -
                 pro_rata(order->points, order->aux, order->amount);
  Effect& eff = begin_effect(e, out);
  if (claim(e, ps, pc, eff) != Result::kOk) return finish_effect(eff, acc);
  acc->available -= back;
  acc->qualifying -= std::min(back, acc->qualifying);
  order->aux += refund;
  ps.stats.clawed_back += back;
  touch(acc);
  eff.points = back;
  record_order(ps, e, pc.fp, eff, 0);
  finish_effect(eff, acc);
}

void Shard::on_adjust(const Event& e, ProgramState& ps, ApplyOutput* out) {
  Result op = Result::kOk;
  if (e.code == 0) op = Result::kInvalidCode;
  else if (e.amount == 0 || e.amount > kPointsMax || e.amount < -kPointsMax) op = Result::kInvalidAmount;
  Precheck pc;
  if (precheck(e, ps, false, op, &pc, out)) return;
  AccountRecord* acc = ps.accounts.find(e.account);
  if (acc == nullptr) return reject(e, Result::kAccountNotFound, nullptr, out);
  if (acc->available + e.amount < 0) return reject(e, Result::kInsufficientPoints, acc, out);
  if (acc->available + e.amount > kPointsMax) return reject(e, Result::kOverflow, acc, out);
  Effect& eff = begin_effect(e, out);
  if (claim(e, ps, pc, eff) != Result::kOk) return finish_effect(eff, acc);
  acc->available += e.amount;
  ps.stats.adjusted += e.amount;
  touch(acc);
  eff.points = e.amount;
  record_order(ps, e, pc.fp, eff, 0);
  finish_effect(eff, acc);
}

// A transfer leg names the effect that sent it (its `target` holds that effect's seq and shard),
// and the leg's own effect depends on it: the runtime hands effects out dependencies first, so the
// log never holds a credit without the debit that sent it, or a refund without the refusal.
Ref128 Shard::leg_origin(const Effect& sender) { return {sender.seq, sender.shard}; }

void Shard::depend_on_origin(const Event& leg, Effect& eff) {
  if (leg.target.hi != index_ && leg.target.lo != 0) {
    eff.depends_shard = static_cast<uint16_t>(leg.target.hi);
    eff.depends_seq = leg.target.lo;
  }
}

// A transfer is two legs (DESIGN section 8): here the sender's points leave (and are in transit);
// the receiver's shard credits them on kTransferIn, or bounces them back with kTransferBounce.
void Shard::on_transfer(const Event& e, ProgramState& ps, ApplyOutput* out) {
  Result op = Result::kOk;
  if (e.counterparty == e.account) op = Result::kSameAccount;
  else if (e.amount <= 0 || e.amount > kPointsMax) op = Result::kInvalidAmount;
  Precheck pc;
  if (precheck(e, ps, false, op, &pc, out)) return;
  AccountRecord* acc = ps.accounts.find(e.account);
  if (acc == nullptr) return reject(e, Result::kAccountNotFound, nullptr, out);
  RateWindow rw = rate_window(ps, e);
  if (rw.limited) return reject(e, Result::kRateLimited, acc, out);
  if (acc->available < e.amount) return reject(e, Result::kInsufficientPoints, acc, out);
  Effect& eff = begin_effect(e, out);
  if (claim(e, ps, pc, eff) != Result::kOk) return finish_effect(eff, acc);
  acc->available -= e.amount;
  ps.stats.transfer_out += e.amount;
  touch(acc);
  commit_rate_window(rw, 0);
  eff.points = e.amount;
  record_order(ps, e, pc.fp, eff, 0);
  finish_effect(eff, acc);
  Event leg = e;
  leg.kind = EventKind::kTransferIn;
  leg.account = e.counterparty;
  leg.counterparty = e.account;
  leg.target = leg_origin(eff);
  out->forward.push_back(leg);
}

void Shard::on_transfer_in(const Event& e, ProgramState& ps, ApplyOutput* out) {
  Ref128 key = transfer_in_key(e.ref);
  if (ps.find_order(key) != nullptr) return;  // this leg was applied already (a resend)
  AccountRecord* acc = ps.accounts.find(e.account);
  Result r = Result::kOk;
  if (acc == nullptr) r = Result::kAccountNotFound;
  else if (acc->available + e.amount > kPointsMax) r = Result::kOverflow;
  Effect& eff = begin_effect(e, out);
  eff.result = r;
  depend_on_origin(e, eff);
  if (r == Result::kOk) {
    acc->available += e.amount;
    acc->lifetime_earned += e.amount;
    ps.stats.transfer_in += e.amount;
    touch(acc);
    eff.points = e.amount;
  } else {
    eff.flags |= kEffectBounced;
    Event bounce = e;
    bounce.kind = EventKind::kTransferBounce;
    bounce.account = e.counterparty;
    bounce.counterparty = e.account;
    bounce.target = leg_origin(eff);
    out->forward.push_back(bounce);
  }
  Event keyed = e;
  keyed.ref = key;
  if (ps.orders[0]->size() < ps.orders[0]->capacity_max()) record_order(ps, keyed, 0, eff, 0);
  finish_effect(eff, acc);
}

void Shard::on_transfer_bounce(const Event& e, ProgramState& ps, ApplyOutput* out) {
  OrderRecord* transfer = ps.find_order(e.ref);
  if (transfer != nullptr) {
    if (transfer->state == OrderState::kBounced) return;  // refunded already (a resend)
    transfer->state = OrderState::kBounced;
  }
  AccountRecord* acc = ps.accounts.find(e.account);
  assert(acc != nullptr);  // the sender existed when the points left; accounts are never removed
  Effect& eff = begin_effect(e, out);
  depend_on_origin(e, eff);
  acc->available += e.amount;
  ps.stats.transfer_bounced += e.amount;
  eff.points = e.amount;
  finish_effect(eff, acc);
}

void Shard::on_balance(const Event& e, ProgramState& ps, ApplyOutput* out) {
  if (e.account == 0) return reject(e, Result::kInvalidAccount, nullptr, out);
  const AccountRecord* acc = std::as_const(ps.accounts).find(e.account);  // a read: marks nothing
  reject(e, acc == nullptr ? Result::kAccountNotFound : Result::kOk, acc, out);
}

// ---- cap windows ------------------------------------------------------------------------------
Shard::RateWindow Shard::rate_window(ProgramState& ps, const Event& e) {
  RateWindow rw;
  if (!ps.caps) return rw;
  const Program& p = *ps.rules;
  bool created = false;
  auto* w = ps.caps->insert(e.account, &created);  // one per account: never over capacity
  assert(w != nullptr);
  rw.window = w;
  rw.day = static_cast<uint32_t>(local_day(p, now_ms_));
  rw.minute = static_cast<uint32_t>(local_minute(p, now_ms_));
  rw.day_points = w->day == rw.day ? w->day_points : 0;
  uint32_t minute_events = w->minute == rw.minute ? w->minute_events : 0;
  rw.limited = p.events_per_minute_max > 0 && counts_for_rate(e.kind) &&
               minute_events >= p.events_per_minute_max;
  rw.counts = counts_for_rate(e.kind);
  return rw;
}

void Shard::commit_rate_window(const RateWindow& rw, int64_t points) {
  if (rw.window == nullptr) return;
  auto* w = static_cast<CapWindow*>(rw.window);
  if (w->day != rw.day) {
    w->day = rw.day;
    w->day_points = 0;
  }
  w->day_points += points;
  if (w->minute != rw.minute) {
    w->minute = rw.minute;
    w->minute_events = 0;
  }
  if (rw.counts) ++w->minute_events;
}

// ---- reads ------------------------------------------------------------------------------------
bool Shard::account(uint32_t program, uint64_t id, AccountState* state) const {
  const ProgramState* ps = find_program(program);
  if (ps == nullptr || id == 0) return false;
  const AccountRecord* acc = ps->accounts.find(id);
  if (acc == nullptr) return false;
  *state = to_state(*acc);
  return true;
}

void Shard::for_each_account(uint32_t program,
                             const std::function<void(uint64_t, const AccountState&)>& f) const {
  const ProgramState* ps = find_program(program);
  if (ps == nullptr) return;
  ps->accounts.for_each([&](const AccountRecord& a) { f(a.id, to_state(a)); });
}

const ProgramStats* Shard::stats(uint32_t program) const {
  const ProgramState* ps = find_program(program);
  return ps != nullptr ? &ps->stats : nullptr;
}

ShardMemory Shard::memory() const {
  ShardMemory m;
  for (const auto& ps : programs_) {
    m.account_bytes += ps->accounts.bytes();
    if (ps->caps) m.account_bytes += ps->caps->bytes();
    if (ps->action_limits) m.account_bytes += ps->action_limits->bytes();
    m.order_bytes += ps->orders[0]->bytes() + ps->orders[1]->bytes() +
                     ps->hold_ring.capacity() * sizeof(HoldDue);
    m.accounts += ps->accounts.size();
    m.orders += ps->orders[0]->size() + ps->orders[1]->size();
  }
  return m;
}

// ---- checkpoints -------------------------------------------------------------------------------
namespace {

constexpr uint32_t kStateMagic = 0x534b4354;  // "TCKS"
constexpr uint32_t kStateVersion = 1;

struct StateWriter {
  std::vector<uint8_t> bytes;
  template <class T>
  void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* b = reinterpret_cast<const uint8_t*>(&v);
    bytes.insert(bytes.end(), b, b + sizeof(T));
  }
};

struct StateReader {
  std::span<const uint8_t> in;
  template <class T>
  T get() {
    T v{};
    if (in.size() < sizeof(T)) throw std::runtime_error("checkpoint state is truncated");
    std::memcpy(&v, in.data(), sizeof(T));
    in = in.subspan(sizeof(T));
    return v;
  }
};

template <class F>
void for_each_stat(ProgramStats& st, F&& f) {
  f(st.issued), f(st.redeemed), f(st.expired), f(st.clawed_back), f(st.adjusted), f(st.transfer_out),
      f(st.transfer_in), f(st.transfer_bounced), f(st.members), f(st.duplicates), f(st.replays), f(st.events);
}

}  // namespace

std::vector<uint8_t> Shard::begin_checkpoint() {
  StateWriter w;
  w.put(kStateMagic);
  w.put(kStateVersion);
  w.put(index_);
  w.put(seq_);
  w.put(now_ms_);
  w.put(static_cast<uint32_t>(programs_.size()));
  for (auto& ps : programs_) {
    w.put(ps->rules->id);
    for_each_stat(ps->stats, [&](auto& v) { w.put(v); });
    w.put(ps->generation_start_ms);
    w.put(ps->order_ids[0]);
    // The shape of every table: slices are only meaningful in a table of the same slot count.
    uint64_t shape[kTableCount] = {};
    ps->for_each_table([&](uint8_t id, auto& t) { shape[id] = t.slot_count(); });
    for (uint64_t v : shape) w.put(v);
    w.put(static_cast<uint64_t>(ps->hold_count));
    for (size_t k = 0; k < ps->hold_count; ++k) w.put(ps->hold_ring[(ps->hold_head + k) % ps->hold_ring.size()]);
    ps->for_each_table([](uint8_t, auto& t) { t.begin_checkpoint(); });
  }
  return std::move(w.bytes);
}

bool Shard::checkpoint_step(size_t max_slices) {
  size_t left = max_slices;
  bool done = true;
  for (auto& ps : programs_) {
    ps->for_each_table([&](uint8_t, auto& t) {
      if (left > 0) left -= t.save_pending(left);
      done &= t.pending() == 0;
    });
  }
  return done;
}

bool Shard::checkpoint_active() const {
  bool active = false;
  for (auto& ps : programs_) ps->for_each_table([&](uint8_t, auto& t) { active |= t.pending() > 0; });
  return active;
}

void Shard::restore_state(std::span<const uint8_t> state) {
  StateReader r{state};
  if (r.get<uint32_t>() != kStateMagic) throw std::runtime_error("not a checkpoint state");
  if (uint32_t v = r.get<uint32_t>(); v != kStateVersion)
    throw std::runtime_error("checkpoint state version " + std::to_string(v) + " is not known to this build");
  if (uint16_t i = r.get<uint16_t>(); i != index_)
    throw std::runtime_error("checkpoint state of shard " + std::to_string(i) + " given to shard " +
                             std::to_string(index_));
  seq_ = r.get<uint64_t>();
  now_ms_ = r.get<int64_t>();
  uint32_t n = r.get<uint32_t>();
  if (n != programs_.size())
    throw std::runtime_error("the checkpoint has " + std::to_string(n) + " programs, the configuration " +
                             std::to_string(programs_.size()));
  for (auto& ps : programs_) {
    uint32_t id = r.get<uint32_t>();
    if (id != ps->rules->id)
      throw std::runtime_error("the checkpoint has program " + std::to_string(id) + " where the configuration has " +
                               std::to_string(ps->rules->id));
    for_each_stat(ps->stats, [&](auto& v) { v = r.get<std::remove_reference_t<decltype(v)>>(); });
    ps->generation_start_ms = r.get<int64_t>();
    uint8_t current = r.get<uint8_t>();
    if (current != ps->order_ids[0]) {
      std::swap(ps->orders[0], ps->orders[1]);
      std::swap(ps->order_ids[0], ps->order_ids[1]);
    }
    uint64_t shape[kTableCount] = {};
    ps->for_each_table([&](uint8_t tid, auto& t) { shape[tid] = t.slot_count(); });
    static const char* const kNames[kTableCount] = {"accounts", "cap windows", "action limits", "orders",
                                                    "orders"};
    for (int k = 0; k < kTableCount; ++k) {
      uint64_t saved = r.get<uint64_t>();
      if (saved != shape[k])
        throw std::runtime_error(
            "program " + std::to_string(id) + ": the checkpoint's " + kNames[k] + " table has " +
            std::to_string(saved) + " slots, this configuration makes " + std::to_string(shape[k]) +
            " (accounts_max, orders_max or the caps changed); start with the capacities the checkpoint was "
            "written with");
    }
    uint64_t holds = r.get<uint64_t>();
    if (holds > ps->hold_ring.size())
      throw std::runtime_error("program " + std::to_string(id) + ": the checkpoint has " + std::to_string(holds) +
                               " open holds, more than holds_open_max");
    ps->hold_head = 0;
    ps->hold_count = holds;
    for (uint64_t k = 0; k < holds; ++k) ps->hold_ring[k] = r.get<HoldDue>();
  }
  if (!r.in.empty()) throw std::runtime_error("checkpoint state has trailing bytes");
}

void Shard::restore_slice(uint32_t program, uint8_t table, uint64_t slice, std::span<const uint8_t> bytes) {
  ProgramState* ps = find_program(program);
  if (ps == nullptr) throw std::runtime_error("checkpoint slice of unknown program " + std::to_string(program));
  bool found = false, ok = false;
  ps->for_each_table([&](uint8_t id, auto& t) {
    if (id != table) return;
    found = true;
    ok = t.restore_slice(slice, bytes.data(), bytes.size());
  });
  if (!found || !ok)
    throw std::runtime_error("checkpoint slice " + std::to_string(slice) + " of table " + std::to_string(table) +
                             " does not fit program " + std::to_string(program));
}

void Shard::finish_restore() {
  for (auto& ps : programs_) ps->for_each_table([](uint8_t, auto& t) { t.recount(); });
}

bool next_slice_record(std::span<const uint8_t>* in, SliceRecord* r) {
  if (in->size() < kSliceRecordHeader) return false;
  const uint8_t* h = in->data();
  uint32_t len = 0;
  std::memcpy(&r->program, h, 4);
  r->table = h[4];
  std::memcpy(&r->slice, h + 5, 8);
  std::memcpy(&len, h + 13, 4);
  if (in->size() - kSliceRecordHeader < len) return false;
  r->bytes = in->subspan(kSliceRecordHeader, len);
  *in = in->subspan(kSliceRecordHeader + len);
  return true;
}

}  // namespace tally
