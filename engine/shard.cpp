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
  uint64_t fingerprint : 48;  // the low 48 bits of the event's (kFingerprintMask)
  uint64_t lot_day : 16;      // earn: the day its lots count from; hold: the earliest expiry it took
  int64_t amount;    // earn: minor units; hold, transfer: points
  int64_t points;    // the original effect's points, returned on replay
  int64_t aux;       // earn: minor units refunded so far; hold: expiry time (ms)
  uint32_t time_s;   // server time of the order
  EventKind kind;
  Result result;
  OrderState state;
  uint8_t effect_flags;  // the original effect's flags (kEffectCapped, kEffectStamped), returned on replay
};
static_assert(sizeof(OrderRecord) == 64);

constexpr uint64_t kFingerprintMask = (uint64_t{1} << 48) - 1;

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

// A member's paid membership: the last local day it covers. 16 bytes.
struct MemberRecord {
  uint64_t account;  // 0 = empty slot
  uint16_t until;
  uint8_t reserved[6];
};
struct MemberTraits {
  using Key = uint64_t;
  static uint64_t hash(uint64_t k) { return mix64(k); }
  static uint64_t key(const MemberRecord& e) { return e.account; }
  static bool is_empty(const MemberRecord& e) { return e.account == 0; }
  static void init(MemberRecord& e, uint64_t k) {
    e = {};
    e.account = k;
  }
};

// A member's tier qualification in a program with a tier window (TierPolicy). 112 bytes.
constexpr size_t kTierMonthsMax = 12;
struct TierRecord {
  uint64_t account;  // 0 = empty slot
  uint16_t period;   // the period its figures are for (tier_period_of)
  uint8_t earned;    // the tier the window closed at the end of the previous period qualified for
  uint8_t grace;     // the tier held at the end of the previous period: kept through the grace days
  uint8_t reached;   // the highest tier this period's qualifying points have reached
  uint8_t reserved[3];
  // Qualifying points by month, a ring indexed by period % window_months (rolling windows; a
  // calendar year uses [0]). They sum to the account's `qualifying`.
  int64_t months[kTierMonthsMax];
};
static_assert(sizeof(TierRecord) == 112);
struct TierTraits {
  using Key = uint64_t;
  static uint64_t hash(uint64_t k) { return mix64(k); }
  static uint64_t key(const TierRecord& e) { return e.account; }
  static bool is_empty(const TierRecord& e) { return e.account == 0; }
  static void init(TierRecord& e, uint64_t k) {
    e = {};
    e.account = k;
  }
};

// A member's stamps on each of the program's cards (below zero: owed, a refund of a purchase whose
// stamp completed a card). 16 bytes.
struct StampRecord {
  uint64_t account;  // 0 = empty slot
  int16_t stamps[kStampCardsMax];
};
static_assert(sizeof(StampRecord) == 16);
struct StampTraits {
  using Key = uint64_t;
  static uint64_t hash(uint64_t k) { return mix64(k); }
  static uint64_t key(const StampRecord& e) { return e.account; }
  static bool is_empty(const StampRecord& e) { return e.account == 0; }
  static void init(StampRecord& e, uint64_t k) {
    e = {};
    e.account = k;
  }
};

// A purchase keeps a card's stamp while what is left of it after refunds is at least the card's
// minimum (and more than nothing).
bool keeps_stamp(const StampCard& c, int64_t remaining_minor) {
  return remaining_minor > 0 && remaining_minor >= c.min_purchase_minor;
}

struct HoldDue {
  int64_t expires_ms;
  Ref128 ref;
};

// A member's lots, kept in blocks of 6: block 0 holds the first 6, block 1 the next, and so on.
// The lots are ordered pending first (by the day they become spendable), then spendable (by the
// day they expire), so spending and expiry take from the front of the spendable ones. A lot packs
// its day (16 bits), a pending bit and its points (47 bits: a credit larger than that is split
// over lots of the same day). 64 bytes, one cache line: most members' lots are one lookup.
constexpr size_t kLotsPerBlock = 6;
constexpr uint16_t kLotBlocksPerMember = 150;  // 900 lots at most
constexpr size_t kLotsPerMemberMax = kLotsPerBlock * kLotBlocksPerMember;
constexpr int64_t kLotPointsMax = (int64_t{1} << 47) - 1;

struct LotBlockKey {
  uint64_t account;
  uint16_t index;
  friend bool operator==(const LotBlockKey&, const LotBlockKey&) = default;
};
struct LotBlock {
  uint64_t account;  // 0 = empty slot
  uint16_t index;    // 0: the member's first block
  uint8_t count;     // lots used in this block
  uint8_t blocks;    // block 0: how many blocks the member has
  uint8_t reserved[4];
  uint64_t lots[kLotsPerBlock];
};
static_assert(sizeof(LotBlock) == 64);

struct LotBlockTraits {
  using Key = LotBlockKey;
  static uint64_t hash(const LotBlockKey& k) { return mix64(k.account * 0x9E3779B97F4A7C15ULL + k.index); }
  static LotBlockKey key(const LotBlock& e) { return {e.account, e.index}; }
  static bool is_empty(const LotBlock& e) { return e.account == 0; }
  static void init(LotBlock& e, const LotBlockKey& k) {
    e = {};
    e.account = k.account;
    e.index = k.index;
  }
};
using LotTable = FlatTable<LotBlock, LotBlockTraits>;

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

// One lot, unpacked.
struct Shard::Lot {
  uint16_t day;
  bool pending;
  int64_t points;
};

namespace {
// Pending lots first, then by day.
bool before(const Shard::Lot& a, uint16_t day, bool pending) {
  return a.pending != pending ? a.pending : a.day < day;
}
uint64_t pack(const Shard::Lot& l) {
  return uint64_t{l.day} | (uint64_t{l.pending} << 16) | (static_cast<uint64_t>(l.points) << 17);
}
Shard::Lot unpack(uint64_t v) {
  return {static_cast<uint16_t>(v & 0xFFFF), ((v >> 16) & 1) != 0, static_cast<int64_t>(v >> 17)};
}
}  // namespace

AccountState to_state(const Shard::AccountRecord& a) {
  AccountState s;
  s.available = a.available;
  s.held = a.held;
  s.lifetime_earned = a.lifetime_earned;
  s.lifetime_redeemed = a.lifetime_redeemed;
  s.qualifying = a.qualifying;
  s.pending = a.pending;
  s.tier = a.tier;
  s.flags = a.flags;
  return s;
}

// ---- 2. ProgramState ----------------------------------------------------------------------------
// Table ids in checkpoints (SliceRecord::table).
enum : uint8_t { kTableAccounts = 0, kTableCaps = 1, kTableActions = 2, kTableOrdersA = 3, kTableOrdersB = 4,
                 kTableLots = 5, kTableMembers = 6, kTableTiers = 7, kTableStamps = 8, kTableCount = 9 };

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
    if (p.lots.has_lots()) {
      lots_max = p.lots_max != 0 ? p.lots_max : 4 * p.accounts_max;
      // A member with n lots has at most n / 6 + 1 blocks; room beyond lots_max for what cannot
      // be refused (every open hold may come back as a lot of its own).
      const uint64_t lots_most = lots_max + p.holds_open_max;
      lots = std::make_unique<LotTable>(std::min(lots_most, p.accounts_max) + lots_most / kLotsPerBlock + 1);
      scratch.resize(kLotsPerMemberMax + 4);
    }
    if (p.tier_policy.windowed()) tiers = std::make_unique<FlatTable<TierRecord, TierTraits>>(p.accounts_max);
    if (p.stamp_card_count > 0) stamps = std::make_unique<FlatTable<StampRecord, StampTraits>>(p.accounts_max);
    tier_effects = tiers_have_effects(p);
    lifecycle = p.lots.has_lots() || p.lots.inactivity_days > 0 || tiers != nullptr;
    if (p.membership_days > 0) members = std::make_unique<FlatTable<MemberRecord, MemberTraits>>(p.accounts_max);
    slice_out.program = p.id;
    slice_out.out = checkpoint_out;
    accounts.set_slice_sink(&slice_out, kTableAccounts);
    if (caps) caps->set_slice_sink(&slice_out, kTableCaps);
    if (action_limits) action_limits->set_slice_sink(&slice_out, kTableActions);
    if (lots) lots->set_slice_sink(&slice_out, kTableLots);
    if (members) members->set_slice_sink(&slice_out, kTableMembers);
    if (tiers) tiers->set_slice_sink(&slice_out, kTableTiers);
    if (stamps) stamps->set_slice_sink(&slice_out, kTableStamps);
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
    if (lots) f(kTableLots, *lots);
    if (members) f(kTableMembers, *members);
    if (tiers) f(kTableTiers, *tiers);
    if (stamps) f(kTableStamps, *stamps);
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
  std::unique_ptr<LotTable> lots;  // lot blocks, when the program has lots (expiry or pending points)
  uint64_t lots_max = 0;           // lots a credit may create; the table has room for returning holds too
  uint64_t lots_count = 0;         // lots held now, all members
  std::vector<Lot> scratch;        // one member's lots while an operation works on them
  std::vector<Lot> became;         // process_due(): the pending lots that matured
  std::unique_ptr<FlatTable<MemberRecord, MemberTraits>> members;  // when the program sells a membership
  std::unique_ptr<FlatTable<TierRecord, TierTraits>> tiers;  // when the program has a tier window
  bool tier_effects = false;       // tier changes are kTier effects (tiers_have_effects)
  std::unique_ptr<FlatTable<StampRecord, StampTraits>> stamps;  // when the program has stamp cards
  // The tier period of the day last asked about, and its first day (tier_period()).
  mutable int64_t tier_day = -1, tier_day_period = 0, tier_day_start = 0;
  bool lifecycle = false;          // lots, inactivity expiry or a tier window: accounts can fall due
  uint64_t sweep_next = 0;         // the expiry sweep's next account slot (== slot count: pass done)
  int64_t sweep_day = -1;          // the local day of the current pass
  std::vector<HoldDue> hold_ring;  // holds in expiry order (the timeout is per program: FIFO)
  size_t hold_head = 0;
  size_t hold_count = 0;
  ProgramStats stats;
  SliceOut slice_out;
  uint8_t order_ids[2];  // checkpoint table ids of orders[0] and orders[1] (they swap)
};


// ---- tier periods (docs/programs.md "Tiers over time") --------------------------------------------
namespace {

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// The tier period a local day falls in: years since 1970 (calendar year) or months since 1970-01.
int64_t tier_period_of(const TierPolicy& tp, int64_t day) {
  const CivilDate d = civil_from_days(day);
  const int64_t y = int64_t{d.year} - 1970;
  return std::clamp<int64_t>(tp.period == TierPeriod::kCalendarYear ? y : y * 12 + (d.month - 1), 0, 0xFFFF);
}

int64_t tier_period_start(const TierPolicy& tp, int64_t period) {
  if (tp.period == TierPeriod::kCalendarYear) return days_from_civil(static_cast<int32_t>(1970 + period), 1, 1);
  const int64_t y = floor_div(period, 12);
  return days_from_civil(static_cast<int32_t>(1970 + y), static_cast<uint32_t>(period - y * 12 + 1), 1);
}

int64_t window_months(const TierPolicy& tp) {
  return tp.period == TierPeriod::kRollingMonths ? tp.window_months : 1;
}

// The tier period of `day` and its first day, remembered for the day last asked about.
int64_t tier_period(const Shard::ProgramState& ps, int64_t day, int64_t* start) {
  if (day != ps.tier_day) {
    ps.tier_day = day;
    ps.tier_day_period = tier_period_of(ps.rules->tier_policy, day);
    ps.tier_day_start = tier_period_start(ps.rules->tier_policy, ps.tier_day_period);
  }
  *start = ps.tier_day_start;
  return ps.tier_day_period;
}

// The tier a member holds: what this period's points reached, what the last closed window earned,
// and during the grace days what was held when the previous period ended.
uint8_t held_tier(const TierRecord& r, bool in_grace) {
  return std::max({r.reached, r.earned, in_grace ? r.grace : uint8_t{0}});
}

// Brings a member's record (and its window's points `q`) forward to `period`, closing each period
// on the way: the closing window's points decide the tier earned for the next period, and the tier
// held at the end is kept through the grace days. Returns the tier held then.
uint8_t roll_tier(const Program& p, TierRecord& r, int64_t& q, int64_t period, bool in_grace) {
  const int64_t n = window_months(p.tier_policy);
  for (int64_t steps = 0; r.period < period; ++steps) {
    if (steps == n + 2) {  // every figure is zero by now: the same for any later period
      r.period = static_cast<uint16_t>(period);
      break;
    }
    r.grace = std::max(r.reached, r.earned);
    r.earned = tier_for(p, q, 0);
    ++r.period;
    int64_t& leaving = r.months[r.period % n];  // the month that leaves the window
    q -= leaving;
    leaving = 0;
    r.reached = tier_for(p, q, 0);
  }
  return held_tier(r, in_grace);
}

// The period whose window a purchase's qualifying points counted in, when applied on local day
// `applied`: its own (by the day it is dated by) while that is still in the window, else the current.
int64_t qualifying_period(const TierPolicy& tp, int64_t dated, int64_t applied) {
  const int64_t pd = tier_period_of(tp, dated), pa = tier_period_of(tp, applied);
  return pd <= pa && pd > pa - window_months(tp) ? pd : pa;
}

}  // namespace

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
size_t sweep_budget(size_t events) { return 64 + events; }

void Shard::apply(const Event& e, int64_t time_ms, ApplyOutput* out) {
  now_ms_ = std::max(now_ms_, time_ms);
  if (e.kind == EventKind::kTick) {
    for (auto& ps : programs_) expire_holds(*ps, out);
    // An idle shard's sweep moves on with the ticks. Not in a replay: its effects are logged.
    if (logged_ == nullptr) sweep(kSweepSlotsPerTick, out);
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
  // What is due on the member's points (maturity, expiry) is applied before anything reads or
  // changes them, and again after an event that may have dated a lot in the past (a late event):
  // both as effects of their own, so the log and a replay see them at the same place.
  auto settle = [&] {
    const AccountRecord* a = std::as_const(ps->accounts).find(e.account);
    if (a != nullptr && due(*ps, *a)) process_due(*ps, ps->accounts.find(e.account), out);
  };
  if (ps->lifecycle && e.account != 0) settle();
  switch (e.kind) {
    case EventKind::kEnroll: on_enroll(e, *ps, out); break;
    case EventKind::kEarn:
    case EventKind::kAward: on_earn_or_award(e, *ps, out); break;
    case EventKind::kRedeem:
    case EventKind::kHold: on_redeem_or_hold(e, *ps, out); break;
    case EventKind::kCapture:
    case EventKind::kVoid: on_capture_or_void(e, *ps, out); break;
    case EventKind::kReverse: on_reverse(e, *ps, out); break;
    case EventKind::kAdjust: on_adjust(e, *ps, out); break;
    case EventKind::kTransfer: on_transfer(e, *ps, out); break;
    case EventKind::kTransferIn: on_transfer_in(e, *ps, out); break;
    case EventKind::kTransferBounce: on_transfer_bounce(e, *ps, out); break;
    case EventKind::kBalance: on_balance(e, *ps, out); break;
    case EventKind::kMembership: on_membership(e, *ps, out); break;
    case EventKind::kExpire:
    case EventKind::kMature:
    case EventKind::kTier:
    case EventKind::kStampCard:
    case EventKind::kBonus:
      // Only replay gets here with these (a producer's internal kinds become kInvalid): the
      // logged effect was emitted by process_due above, which has just emitted it again.
      if (logged_ != nullptr) break;
      [[fallthrough]];
    default: {
      Effect& eff = begin_effect(e, out);
      eff.result = Result::kInvalidKind;
      finish_effect(eff, nullptr);
    }
  }
  // Only these can leave something due behind: a credit dated in the past (a late earn or award)
  // and a hold's points returning to the lot they came from (capture of part, void).
  if (ps->lifecycle && e.account != 0 &&
      (e.business_time_ms != 0 || e.kind == EventKind::kCapture || e.kind == EventKind::kVoid))
    settle();
}

void Shard::prefetch(const Event& e) {
  ProgramState* ps = find_program(e.program);
  if (ps == nullptr) return;
  ps->accounts.prefetch(e.account);
  if (ps->lots) ps->lots->prefetch(LotBlockKey{e.account, 0});
  if (ps->tiers) ps->tiers->prefetch(e.account);
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
  sweep(sweep_budget(events.size()), out);
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
    add_lot(ps, acc, static_cast<uint16_t>(hold->lot_day), hold->amount);
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

// The account as effects and reads report it: its record, and its paid membership.
AccountState Shard::state_of(const ProgramState& ps, const AccountRecord& acc) const {
  AccountState s = to_state(acc);
  if (ps.members) {
    if (const MemberRecord* m = ps.members->find(acc.id)) {
      s.member_until = m->until;
      if (m->until >= local_day(*ps.rules, now_ms_)) s.flags |= kAccountPaidMember;
    }
  }
  return s;
}

void Shard::finish_effect(Effect& eff, const AccountRecord* acc) {
  ProgramState* ps = find_program(eff.event.program);
  if (acc != nullptr) {
    eff.state = ps != nullptr ? state_of(*ps, *acc) : to_state(*acc);
  } else {
    eff.flags |= kEffectNoAccount;
  }
  if (eff.event.kind == EventKind::kBalance) return;
  if (ps != nullptr) ++ps->stats.events;
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
  if (prior != nullptr && prior->fingerprint == (pc->fp & kFingerprintMask)) {
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

void Shard::record_order(ProgramState& ps, const Event& e, uint64_t fp, const Effect& eff, int64_t aux,
                         uint16_t lot_day) {
  bool created = false;
  OrderRecord* o = ps.orders[0]->insert(e.ref, &created);
  assert(o != nullptr && created);  // capacity was checked by claim()
  o->account = e.account;
  o->fingerprint = fp & kFingerprintMask;
  o->lot_day = lot_day;
  o->amount = e.amount;
  o->points = eff.points;
  o->aux = aux;
  o->time_s = static_cast<uint32_t>(now_ms_ / 1000);
  o->kind = e.kind;
  o->result = eff.result;
  o->state = OrderState::kOpen;
  o->effect_flags = eff.flags & (kEffectCapped | kEffectStamped | kEffectCampaign);
}

// Answers with `r` without changing anything; `acc` may be null.
void Shard::reject(const Event& e, Result r, const AccountRecord* acc, ApplyOutput* out) {
  Effect& eff = begin_effect(e, out);
  eff.result = r;
  finish_effect(eff, acc);
}

void Shard::touch(ProgramState& ps, AccountRecord* acc) {
  acc->last_activity_day = static_cast<uint16_t>(std::clamp<int64_t>(local_day(*ps.rules, now_ms_), 0, kNeverDay - 1));
}

// ---- 5. operations ------------------------------------------------------------------------------
void Shard::on_enroll(const Event& e, ProgramState& ps, ApplyOutput* out) {
  Precheck pc;
  if (precheck(e, ps, false, e.amount != 0 ? Result::kInvalidAmount : Result::kOk, &pc, out)) return;
  if (AccountRecord* existing = ps.accounts.find(e.account)) {
    return reject(e, Result::kAccountExists, existing, out);
  }
  const Program& p = *ps.rules;
  const uint16_t bonus_expiry = expiry_day(p.lots, local_day(p, now_ms_));
  if (ps.accounts.size() >= ps.accounts.capacity_max() ||
      (p.signup_bonus_points > 0 && !lot_room(ps, e.account, bonus_expiry, false))) {
    return reject(e, Result::kCapacityExhausted, nullptr, out);
  }
  Effect& eff = begin_effect(e, out);
  if (claim(e, ps, pc, eff) != Result::kOk) return finish_effect(eff, nullptr);
  bool created = false;
  AccountRecord* acc = ps.accounts.insert(e.account, &created);
  add_lot(ps, acc, bonus_expiry, p.signup_bonus_points);
  acc->lifetime_earned = p.signup_bonus_points;
  acc->tier = tier_for(p, 0, 0);
  if (ps.tiers) {
    TierRecord* r = ps.tiers->insert(e.account, &created);  // one per account: never over capacity
    assert(r != nullptr);
    int64_t start = 0;
    r->period = static_cast<uint16_t>(tier_period(ps, local_day(p, now_ms_), &start));
  }
  touch(ps, acc);
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
  uint32_t campaign = 1000;
  if (earn) {
    // floor(amount x earn_points x multipliers / (earn_per_minor x 1000 per multiplier)), exact: the
    // multipliers' product (up to three) is applied by parts, so nothing overflows 128 bits.
    const int128 base_num = static_cast<int128>(e.amount) * p.earn_points;  // < 2^80
    int128 mult = p.tiers[acc->tier].multiplier_permille;
    int128 den = static_cast<int128>(p.earn_per_minor) * 1000;
    // A paid member on the day of the purchase earns the membership's multiplier on top.
    if (ps.members) {
      const MemberRecord* m = std::as_const(*ps.members).find(e.account);
      if (m != nullptr && m->until >= base_day(ps, e)) {
        mult *= p.membership_multiplier_permille;
        den *= 1000;
      }
    }
    // And a campaign in force on that day, its own.
    if (p.campaign_count > 0) {
      campaign = campaign_multiplier(p, base_day(ps, e));
      if (campaign != 1000) {
        mult *= campaign;
        den *= 1000;
      }
    }
    points_wide = base_num / den * mult + base_num % den * mult / den;
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
  // A purchase's points qualify for tiers: the tier it reaches, and the upgrade bonus that comes with it.
  const int64_t base = base_day(ps, e);
  const int64_t today_day = local_day(p, now_ms_);
  TierRecord* tr = earn && ps.tiers ? ps.tiers->find(e.account) : nullptr;
  int64_t qual_month = 0;
  uint8_t reached = 0, tier = acc->tier;
  if (earn) {
    if (tr != nullptr) {
      qual_month = qualifying_period(p.tier_policy, base, today_day) % window_months(p.tier_policy);
      reached = std::max(tr->reached, tier_for(p, acc->qualifying + points, 0));
      tier = std::max(tier, reached);
    } else {
      tier = tier_for(p, acc->qualifying + points, acc->tier);
    }
  }
  int64_t tier_bonus = 0;
  for (uint8_t t = acc->tier + 1; t <= tier; ++t) tier_bonus += p.tiers[t].bonus_points;
  int64_t bonus = tier_bonus;  // and what the stamp cards and purchase bonuses below add
  // A purchase stamps every card it is large enough for; the cards it completes credit their reward.
  if (earn && ps.stamps) {
    const StampRecord* sr = std::as_const(*ps.stamps).find(e.account);
    for (uint8_t c = 0; c < p.stamp_card_count; ++c)
      if (keeps_stamp(p.stamp_cards[c], e.amount) &&
          (sr != nullptr ? sr->stamps[c] : 0) + 1 >= static_cast<int>(p.stamp_cards[c].stamps))
        bonus += p.stamp_cards[c].reward_points;
  }
  // Purchase bonuses: the member's first purchase, and a purchase after a long absence.
  int64_t first_bonus = 0, comeback_bonus = 0;
  if (earn) {
    if (p.first_purchase_bonus_points > 0 && !(acc->flags & kAccountPurchased)) first_bonus = p.first_purchase_bonus_points;
    if (p.comeback_days > 0 && today_day - int64_t{acc->last_activity_day} >= p.comeback_days)
      comeback_bonus = p.comeback_bonus_points;
  }
  bonus += first_bonus + comeback_bonus;
  const uint16_t bonus_day = expiry_day(p.lots, today_day);
  if (acc->available + points + bonus > kPointsMax || acc->pending + points > kPointsMax ||
      acc->lifetime_earned + points + bonus > kPointsMax || acc->qualifying + points > kPointsMax) {
    return reject(e, Result::kOverflow, acc, out);
  }
  // Its lot: pending until the return window ends (purchases), then spendable until it expires.
  const bool pending = earn && p.lots.pending_days > 0 && base + p.lots.pending_days > today_day;
  const uint16_t lot_day = pending ? static_cast<uint16_t>(base + p.lots.pending_days) : expiry_day(p.lots, base);
  if ((points > 0 && !lot_room(ps, e.account, lot_day, pending)) ||
      (bonus > 0 && !lot_room(ps, e.account, bonus_day, false))) {
    return reject(e, Result::kCapacityExhausted, acc, out);
  }
  Effect& eff = begin_effect(e, out);
  if (claim(e, ps, pc, eff) != Result::kOk) return finish_effect(eff, acc);
  if (pending) {
    add_pending(ps, acc, lot_day, points);
  } else {
    add_lot(ps, acc, lot_day, points);
  }
  acc->lifetime_earned += points;
  const uint8_t tier_before = acc->tier;
  if (earn) {
    acc->qualifying += points;
    acc->tier = tier;
    if (tr != nullptr) {
      tr->months[qual_month] += points;
      tr->reached = reached;
    }
  }
  if (earn && p.first_purchase_bonus_points > 0) acc->flags |= kAccountPurchased;
  uint8_t completed = 0;  // bit c: card c completed
  if (earn && ps.stamps) {
    bool created = false;
    StampRecord* stamps = ps.stamps->insert(e.account, &created);  // one per account: never over capacity
    assert(stamps != nullptr);
    for (uint8_t c = 0; c < p.stamp_card_count; ++c) {
      const StampCard& card = p.stamp_cards[c];
      if (!keeps_stamp(card, e.amount)) continue;
      eff.flags |= kEffectStamped;
      if (++stamps->stamps[c] >= static_cast<int>(card.stamps)) {
        stamps->stamps[c] = static_cast<int16_t>(stamps->stamps[c] - card.stamps);
        completed |= static_cast<uint8_t>(1u << c);
      }
    }
  }
  touch(ps, acc);
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
  if (campaign != 1000) eff.flags |= kEffectCampaign;
  record_order(ps, e, pc.fp, eff, 0, static_cast<uint16_t>(std::clamp<int64_t>(base, 1, kNeverDay - 1)));
  finish_effect(eff, acc);
  if (acc->tier != tier_before && ps.tier_effects)
    emit_reward(ps, acc, EventKind::kTier, acc->tier, tier_bonus, bonus_day, out);
  for (uint8_t c = 0; c < p.stamp_card_count; ++c)
    if (completed & (1u << c)) emit_reward(ps, acc, EventKind::kStampCard, c + 1, p.stamp_cards[c].reward_points, bonus_day, out);
  if (first_bonus > 0)
    emit_reward(ps, acc, EventKind::kBonus, static_cast<uint16_t>(BonusKind::kFirstPurchase), first_bonus, bonus_day, out);
  if (comeback_bonus > 0)
    emit_reward(ps, acc, EventKind::kBonus, static_cast<uint16_t>(BonusKind::kComeback), comeback_bonus, bonus_day, out);
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
  const uint16_t taken_from = take_lots(ps, acc, e.amount);
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
  touch(ps, acc);
  commit_rate_window(rw, 0);
  eff.points = e.amount;
  // A hold's points come back (void, expiry, the rest of a capture) as a lot of the earliest expiry
  // it took: reserving points does not make them live longer.
  record_order(ps, e, pc.fp, eff, expires_ms, taken_from);
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
  add_lot(ps, acc, static_cast<uint16_t>(hold->lot_day), hold->amount - captured);
  acc->lifetime_redeemed += captured;
  ps.stats.redeemed += captured;
  hold->state = capture ? OrderState::kCaptured : OrderState::kVoided;
  touch(ps, acc);
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
  claw_back(ps, acc, static_cast<uint16_t>(order->lot_day), back);
  // The tier qualification loses them too, from the window's month they counted in (none once that
  // month has left the window). A tier reached stays until the period's end.
  int64_t unqualify = std::min(back, acc->qualifying);
  if (ps.tiers) {
    TierRecord* r = ps.tiers->find(e.account);
    const TierPolicy& tp = p.tier_policy;
    const int64_t counted = qualifying_period(tp, order->lot_day, local_day(p, int64_t{order->time_s} * 1000));
    unqualify = 0;
    if (r != nullptr && counted <= r->period && counted > r->period - window_months(tp)) {
      int64_t& month = r->months[counted % window_months(tp)];
      unqualify = std::min(back, month);
      month -= unqualify;
    }
  }
  acc->qualifying -= unqualify;
  if (ps.stamps) {
    // The cards whose stamp this purchase no longer earns give it back (owed, below zero, when the
    // stamp has completed a card already).
    StampRecord* st = ps.stamps->find(e.account);
    for (uint8_t c = 0; st != nullptr && c < p.stamp_card_count; ++c) {
      const StampCard& card = p.stamp_cards[c];
      if (keeps_stamp(card, remaining) && !keeps_stamp(card, remaining - refund)) {
        if (st->stamps[c] > -30'000) --st->stamps[c];
        eff.flags |= kEffectStamped;
      }
    }
  }
  order->aux += refund;
  ps.stats.clawed_back += back;
  touch(ps, acc);
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
  const uint16_t lot_day = expiry_day(ps.rules->lots, local_day(*ps.rules, now_ms_));
  if (e.amount > 0 && !lot_room(ps, e.account, lot_day, false)) return reject(e, Result::kCapacityExhausted, acc, out);
  Effect& eff = begin_effect(e, out);
  if (claim(e, ps, pc, eff) != Result::kOk) return finish_effect(eff, acc);
  if (e.amount > 0) {
    add_lot(ps, acc, lot_day, e.amount);
  } else {
    take_lots(ps, acc, -e.amount);
  }
  ps.stats.adjusted += e.amount;
  touch(ps, acc);
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
  take_lots(ps, acc, e.amount);
  ps.stats.transfer_out += e.amount;
  touch(ps, acc);
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
  // Transferred points start a new life at the receiver, as earned today.
  const uint16_t lot_day = expiry_day(ps.rules->lots, local_day(*ps.rules, now_ms_));
  Result r = Result::kOk;
  if (acc == nullptr) r = Result::kAccountNotFound;
  else if (acc->available + e.amount > kPointsMax) r = Result::kOverflow;
  else if (!lot_room(ps, e.account, lot_day, false)) r = Result::kCapacityExhausted;
  Effect& eff = begin_effect(e, out);
  eff.result = r;
  depend_on_origin(e, eff);
  if (r == Result::kOk) {
    add_lot(ps, acc, lot_day, e.amount);
    acc->lifetime_earned += e.amount;
    ps.stats.transfer_in += e.amount;
    touch(ps, acc);
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
  add_lot(ps, acc, expiry_day(ps.rules->lots, local_day(*ps.rules, now_ms_)), e.amount);
  ps.stats.transfer_bounced += e.amount;
  eff.points = e.amount;
  finish_effect(eff, acc);
}

// Buys `amount` periods (0 = one) of the paid membership: it covers the days after the one it
// covers now (or from today, when it has lapsed), membership_days per period.
void Shard::on_membership(const Event& e, ProgramState& ps, ApplyOutput* out) {
  const Program& p = *ps.rules;
  Result op = Result::kOk;
  if (!ps.members) op = Result::kInvalidKind;  // this program sells no membership
  else if (e.amount < 0 || e.amount > 100) op = Result::kInvalidAmount;
  Precheck pc;
  if (precheck(e, ps, false, op, &pc, out)) return;
  AccountRecord* acc = ps.accounts.find(e.account);
  if (acc == nullptr) return reject(e, Result::kAccountNotFound, nullptr, out);
  Effect& eff = begin_effect(e, out);
  if (claim(e, ps, pc, eff) != Result::kOk) return finish_effect(eff, acc);
  bool created = false;
  MemberRecord* m = ps.members->insert(e.account, &created);  // one per account: never over capacity
  assert(m != nullptr);
  const int64_t today = local_day(p, now_ms_);
  const int64_t from = m->until >= today ? m->until : today - 1;
  const int64_t periods = e.amount == 0 ? 1 : e.amount;
  m->until = static_cast<uint16_t>(std::min<int64_t>(from + periods * p.membership_days, kNeverDay - 1));
  touch(ps, acc);
  record_order(ps, e, pc.fp, eff, 0);
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
  *state = state_of(*ps, *acc);
  return true;
}

void Shard::for_each_account(uint32_t program,
                             const std::function<void(uint64_t, const AccountState&)>& f) const {
  const ProgramState* ps = find_program(program);
  if (ps == nullptr) return;
  ps->accounts.for_each([&](const AccountRecord& a) { f(a.id, state_of(*ps, a)); });
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
    if (ps->lots) m.account_bytes += ps->lots->bytes();
    if (ps->members) m.account_bytes += ps->members->bytes();
    if (ps->tiers) m.account_bytes += ps->tiers->bytes();
    if (ps->stamps) m.account_bytes += ps->stamps->bytes();
    m.order_bytes += ps->orders[0]->bytes() + ps->orders[1]->bytes() +
                     ps->hold_ring.capacity() * sizeof(HoldDue);
    m.accounts += ps->accounts.size();
    m.orders += ps->orders[0]->size() + ps->orders[1]->size();
  }
  return m;
}

// ---- lots, pending points and expiry (docs/programs.md) ----------------------------------------
// In a program with lots, an account's available points are the sum of its spendable lots (never
// below zero while it has any); its pending points the sum of its pending lots. lot_first and
// pending_first (in the account record, so the sweep reads no lot) name the earliest of each.
// An operation loads the member's lots into ProgramState::scratch, works on them there, and
// stores them back (a member's lots are one block for most members: one lookup, prefetched).

int64_t Shard::base_day(const ProgramState& ps, const Event& e) const {
  const Program& p = *ps.rules;
  return local_day(p, p.lots.date_by_purchase ? business_time(e, now_ms_) : now_ms_);
}

bool Shard::due(const ProgramState& ps, const AccountRecord& a) const {
  const int64_t today = local_day(*ps.rules, now_ms_);
  if (a.pending_first != 0 && a.pending_first <= today) return true;
  if (a.lot_first != 0 && a.lot_first < today) return true;
  if (ps.tiers) {
    // A new period to close, or the grace days over with a tier the member holds only by them.
    const TierRecord* r = ps.tiers->find(a.id);
    int64_t start = 0;
    if (r != nullptr && (tier_period(ps, today, &start) != r->period ||
                         (a.tier > std::max(r->reached, r->earned) && today >= start + ps.rules->tier_policy.grace_days)))
      return true;
  }
  const uint32_t n = ps.rules->lots.inactivity_days;
  return n > 0 && (a.available > 0 || a.pending > 0) && today > int64_t{a.last_activity_day} + n;
}

size_t Shard::load_lots(const ProgramState& ps, uint64_t account, std::vector<Lot>* out) const {
  size_t n = 0;
  const LotBlock* b0 = std::as_const(*ps.lots).find(LotBlockKey{account, 0});
  if (b0 == nullptr) return 0;
  for (uint16_t i = 0; i < b0->blocks; ++i) {
    const LotBlock* b = i == 0 ? b0 : std::as_const(*ps.lots).find(LotBlockKey{account, i});
    assert(b != nullptr);
    for (uint8_t k = 0; k < b->count; ++k) (*out)[n++] = unpack(b->lots[k]);
  }
  return n;
}

// Writes `n` lots of ps.scratch back over the member's `had` lots, and the account's heads.
void Shard::store_lots(ProgramState& ps, AccountRecord* acc, size_t had, size_t n) {
  const uint16_t blocks_had = static_cast<uint16_t>((had + kLotsPerBlock - 1) / kLotsPerBlock);
  const uint16_t blocks = static_cast<uint16_t>((n + kLotsPerBlock - 1) / kLotsPerBlock);
  for (uint16_t i = 0; i < blocks; ++i) {
    bool created = false;
    LotBlock* b = ps.lots->insert(LotBlockKey{acc->id, i}, &created);
    assert(b != nullptr);  // sized so that it cannot run out (see ProgramState)
    const size_t from = size_t{i} * kLotsPerBlock;
    b->count = static_cast<uint8_t>(std::min(kLotsPerBlock, n - from));
    b->blocks = i == 0 ? static_cast<uint8_t>(blocks) : 0;
    for (size_t k = 0; k < b->count; ++k) b->lots[k] = pack(ps.scratch[from + k]);
    for (size_t k = b->count; k < kLotsPerBlock; ++k) b->lots[k] = 0;
  }
  for (uint16_t i = blocks; i < blocks_had; ++i) ps.lots->erase(LotBlockKey{acc->id, i});
  ps.lots_count = ps.lots_count + n - had;
  acc->pending_first = 0;
  acc->lot_first = 0;
  for (size_t k = 0; k < n; ++k) {
    const Lot& l = ps.scratch[k];
    if (l.pending && acc->pending_first == 0) acc->pending_first = l.day;
    if (!l.pending) {
      acc->lot_first = l.day;
      break;
    }
  }
}

// Adds `points` to the lot (day, pending) of the `n` lots in scratch, creating it in its place.
// Returns the new count. A member with kLotsPerMemberMax lots gets no new one: the points join the
// lot of the same kind just before their place (they expire a little sooner), or the one after
// when there is none.
size_t Shard::put_lot(ProgramState& ps, size_t n, uint16_t day, bool pending, int64_t points) {
  std::vector<Lot>& v = ps.scratch;
  size_t at = 0;
  while (at < n && before(v[at], day, pending)) ++at;
  while (points > 0) {
    // The last lot of that day with room (a credit past kLotPointsMax spans several).
    size_t same = at;
    while (same < n && v[same].day == day && v[same].pending == pending && v[same].points == kLotPointsMax) ++same;
    if (same < n && v[same].day == day && v[same].pending == pending) {
      const int64_t add = std::min(points, kLotPointsMax - v[same].points);
      v[same].points += add;
      points -= add;
      continue;
    }
    if (n >= kLotsPerMemberMax) {
      const size_t into = same > 0 && v[same - 1].pending == pending ? same - 1 : same;
      if (into < n && v[into].pending == pending) {
        v[into].points += points;  // far below 2^47 in any real program
        return n;
      }
      // No lot of its kind to join (all 900 are of the other): one more lot after all.
    }
    std::copy_backward(v.begin() + static_cast<ptrdiff_t>(same), v.begin() + static_cast<ptrdiff_t>(n),
                       v.begin() + static_cast<ptrdiff_t>(n + 1));
    const int64_t add = std::min(points, kLotPointsMax);
    v[same] = {day, pending, add};
    points -= add;
    ++n;
  }
  return n;
}

bool Shard::lot_room(const ProgramState& ps, uint64_t account, uint16_t day, bool pending) const {
  if (!ps.lots || ps.lots_count < ps.lots_max) return true;
  // Full: only a credit to a lot the member has already fits.
  std::vector<Lot>& v = const_cast<ProgramState&>(ps).scratch;
  const size_t n = load_lots(ps, account, &v);
  for (size_t k = 0; k < n; ++k)
    if (v[k].day == day && v[k].pending == pending && v[k].points < kLotPointsMax) return true;
  return false;
}

void Shard::add_lot(ProgramState& ps, AccountRecord* acc, uint16_t expiry, int64_t points) {
  if (points <= 0) return;
  // What the member owes (a refund of spent points) is paid first.
  const int64_t rest = acc->available < 0 ? std::max<int64_t>(0, acc->available + points) : points;
  acc->available += points;
  if (!ps.lots || rest == 0) return;
  const size_t had = load_lots(ps, acc->id, &ps.scratch);
  store_lots(ps, acc, had, put_lot(ps, had, expiry, false, rest));
}

void Shard::add_pending(ProgramState& ps, AccountRecord* acc, uint16_t mature, int64_t points) {
  if (points <= 0) return;
  const size_t had = load_lots(ps, acc->id, &ps.scratch);
  acc->pending += points;
  store_lots(ps, acc, had, put_lot(ps, had, mature, true, points));
}

// Spends `points` (at most the available points), earliest expiry first. Returns the expiry day of
// the first lot it took from (0: none, or no lots in this program).
uint16_t Shard::take_lots(ProgramState& ps, AccountRecord* acc, int64_t points) {
  acc->available -= points;
  if (!ps.lots || points <= 0) return 0;
  std::vector<Lot>& v = ps.scratch;
  const size_t had = load_lots(ps, acc->id, &v);
  size_t first = 0;
  while (first < had && v[first].pending) ++first;
  const uint16_t first_taken = first < had ? v[first].day : 0;
  size_t k = first;
  for (; k < had && points > 0; ++k) {
    const int64_t take = std::min(points, v[k].points);
    v[k].points -= take;
    points -= take;
    if (v[k].points > 0) break;
  }
  // Lots [first, k) are used up (the one at k, if any, was only cut).
  const size_t gone = k - first;
  std::copy(v.begin() + static_cast<ptrdiff_t>(k), v.begin() + static_cast<ptrdiff_t>(had),
            v.begin() + static_cast<ptrdiff_t>(first));
  store_lots(ps, acc, had, had - gone);
  return first_taken;
}

// Takes up to `max` points from the lot (day, pending). Returns what it took.
int64_t Shard::take_from_lot(ProgramState& ps, AccountRecord* acc, uint16_t day, bool pending, int64_t max) {
  if (max <= 0) return 0;
  std::vector<Lot>& v = ps.scratch;
  const size_t had = load_lots(ps, acc->id, &v);
  int64_t taken = 0;
  size_t n = 0;
  for (size_t k = 0; k < had; ++k) {
    if (v[k].day == day && v[k].pending == pending && taken < max) {
      const int64_t take = std::min(max - taken, v[k].points);
      v[k].points -= take;
      taken += take;
    }
    if (v[k].points > 0) v[n++] = v[k];
  }
  (pending ? acc->pending : acc->available) -= taken;
  store_lots(ps, acc, had, n);
  return taken;
}

// A refund's points: from the order's own pending lot while it is pending, else from the lot it
// became, then earliest expiry first; what the member has spent already is owed (available below
// zero), and paid by the next points credited.
void Shard::claw_back(ProgramState& ps, AccountRecord* acc, uint16_t base, int64_t points) {
  if (!ps.lots || points <= 0) {
    acc->available -= points;
    return;
  }
  const LotPolicy& l = ps.rules->lots;
  int64_t left = points;
  if (l.pending_days > 0) left -= take_from_lot(ps, acc, static_cast<uint16_t>(base + l.pending_days), true, left);
  if (left > 0 && acc->available > 0) left -= take_from_lot(ps, acc, expiry_day(l, base), false, left);
  if (left > 0 && acc->available > 0) {
    const int64_t t = std::min(left, acc->available);
    take_lots(ps, acc, t);
    left -= t;
  }
  acc->available -= left;
}

void Shard::emit_lifecycle(ProgramState& ps, AccountRecord* acc, EventKind kind, ExpireReason why, int64_t points,
                           ApplyOutput* out) {
  if (points == 0) return;
  Event ev{};
  ev.kind = kind;
  ev.program = ps.rules->id;
  ev.account = acc->id;
  ev.amount = points;
  ev.code = kind == EventKind::kExpire ? static_cast<uint16_t>(why) : 0;
  Effect& eff = begin_effect(ev, out);
  eff.points = points;
  finish_effect(eff, acc);
}

// Applies what is due on the account today, each as an effect: pending lots that have matured
// (kMature), lots past their expiry day (kExpire, lots), and, after the inactivity period, every
// point left (kExpire, inactivity).
void Shard::process_due(ProgramState& ps, AccountRecord* acc, ApplyOutput* out) {
  const Program& p = *ps.rules;
  const int64_t today = local_day(p, now_ms_);
  std::vector<Lot>& v = ps.scratch;
  const size_t had = ps.lots ? load_lots(ps, acc->id, &v) : 0;
  size_t n = had;
  // The matured pending lots leave the front; their points join the spendable lots (paying what
  // is owed first).
  size_t m = 0;
  int64_t matured = 0;
  while (m < n && v[m].pending && v[m].day <= today) matured += v[m++].points;
  if (m > 0) {
    std::vector<Lot>& became = ps.became;
    became.assign(v.begin(), v.begin() + static_cast<ptrdiff_t>(m));
    std::copy(v.begin() + static_cast<ptrdiff_t>(m), v.begin() + static_cast<ptrdiff_t>(n), v.begin());
    n -= m;
    acc->pending -= matured;
    for (const Lot& l : became) {
      const int64_t rest = acc->available < 0 ? std::max<int64_t>(0, acc->available + l.points) : l.points;
      acc->available += l.points;
      if (rest > 0) n = put_lot(ps, n, expiry_day(p.lots, l.day - p.lots.pending_days), false, rest);
    }
    emit_lifecycle(ps, acc, EventKind::kMature, ExpireReason::kLots, matured, out);
  }
  // Spendable lots past their last day lapse.
  size_t first = 0;
  while (first < n && v[first].pending) ++first;
  size_t k = first;
  int64_t lapsed = 0;
  while (k < n && v[k].day < today) lapsed += v[k++].points;
  if (k > first) {
    std::copy(v.begin() + static_cast<ptrdiff_t>(k), v.begin() + static_cast<ptrdiff_t>(n),
              v.begin() + static_cast<ptrdiff_t>(first));
    n -= k - first;
    acc->available -= lapsed;
    ps.stats.expired += lapsed;
    emit_lifecycle(ps, acc, EventKind::kExpire, ExpireReason::kLots, lapsed, out);
  }
  const uint32_t days = p.lots.inactivity_days;
  if (days > 0 && (acc->available > 0 || acc->pending > 0) && today > int64_t{acc->last_activity_day} + days) {
    const int64_t spendable = std::max<int64_t>(acc->available, 0);
    const int64_t all = spendable + acc->pending;
    acc->available -= spendable;
    acc->pending = 0;
    n = 0;
    ps.stats.expired += all;
    emit_lifecycle(ps, acc, EventKind::kExpire, ExpireReason::kInactivity, all, out);
  }
  // Written back once, with the lot heads (which the effects above do not show).
  if (ps.lots && (m > 0 || k > first || n != had)) store_lots(ps, acc, had, n);
  // The tier review: periods that have ended are closed (their window's points decide the tier
  // kept for the next one), and a tier held only by the grace days is lost once they are over.
  if (ps.tiers) {
    if (TierRecord* r = ps.tiers->find(acc->id)) {
      int64_t start = 0;
      const int64_t period = tier_period(ps, today, &start);
      const int64_t qualifying = acc->qualifying;
      const uint8_t tier = roll_tier(p, *r, acc->qualifying, period, today < start + p.tier_policy.grace_days);
      // Whatever the review changes that effects show (the tier, the window's points) is an
      // effect of its own, so a later effect never shows a change nobody was told of.
      if (tier != acc->tier || acc->qualifying != qualifying) {
        acc->tier = tier;
        emit_reward(ps, acc, EventKind::kTier, acc->tier, 0, 0, out);
      }
    }
  }
}

// An engine-made credit or notice of its own (an upgrade or tier review, a completed stamp card, a
// purchase bonus): kind, code, and `bonus` points credited as a lot of `bonus_day` (issued,
// lifetime earned; not qualifying).
void Shard::emit_reward(ProgramState& ps, AccountRecord* acc, EventKind kind, uint16_t code, int64_t bonus,
                        uint16_t bonus_day, ApplyOutput* out) {
  Event ev{};
  ev.kind = kind;
  ev.program = ps.rules->id;
  ev.account = acc->id;
  ev.amount = bonus;
  ev.code = code;
  if (bonus > 0) {
    add_lot(ps, acc, bonus_day, bonus);
    acc->lifetime_earned += bonus;
    ps.stats.issued += bonus;
  }
  Effect& eff = begin_effect(ev, out);
  eff.points = bonus;
  finish_effect(eff, acc);
}

size_t Shard::sweep(size_t max_slots, ApplyOutput* out) {
  size_t checked = 0;
  for (auto& psp : programs_) {
    ProgramState& ps = *psp;
    if (!ps.lifecycle) continue;
    const int64_t today = local_day(*ps.rules, now_ms_);
    if (today != ps.sweep_day) {
      ps.sweep_day = today;
      ps.sweep_next = 0;
    }
    const uint64_t end = ps.accounts.slot_count();
    while (ps.sweep_next < end && checked < max_slots) {
      const AccountRecord* a = std::as_const(ps.accounts).at(ps.sweep_next);
      if (a != nullptr && due(ps, *a)) process_due(ps, ps.accounts.find(a->id), out);
      ++ps.sweep_next;
      ++checked;
    }
  }
  return checked;
}

bool Shard::statement(uint32_t program, uint64_t id, Statement* out) const {
  const ProgramState* ps = find_program(program);
  if (ps == nullptr || id == 0) return false;
  const AccountRecord* acc = ps->accounts.find(id);
  if (acc == nullptr) return false;
  // The statement of a copy on which what is due has been applied: the member's lots are read,
  // then aged exactly as process_due() would age them.
  const Program& p = *ps->rules;
  const int64_t today = local_day(p, now_ms_);
  AccountState st = state_of(*ps, *acc);
  std::vector<LotLine> pending, spendable;
  if (ps->lots) {
    std::vector<Lot> v(kLotsPerMemberMax);
    const size_t n = load_lots(*ps, id, &v);
    for (size_t k = 0; k < n; ++k) {
      if (v[k].pending) {
        pending.push_back({expiry_day(p.lots, v[k].day - p.lots.pending_days), v[k].day, v[k].points});
      } else if (!spendable.empty() && spendable.back().expiry_day == v[k].day) {
        spendable.back().points += v[k].points;  // one lot split for its size
      } else {
        spendable.push_back({v[k].day, 0, v[k].points});
      }
    }
  } else if (acc->available > 0) {
    spendable.push_back({kNeverDay, 0, acc->available});  // without lots every point is alike
  }
  for (auto it = pending.begin(); it != pending.end();) {
    if (it->mature_day > today) {
      ++it;
      continue;
    }
    int64_t pts = it->points;
    st.pending -= pts;
    int64_t rest = st.available < 0 ? std::max<int64_t>(0, st.available + pts) : pts;
    st.available += pts;
    if (rest > 0) {
      auto s = std::find_if(spendable.begin(), spendable.end(),
                            [&](const LotLine& x) { return x.expiry_day >= it->expiry_day; });
      if (s != spendable.end() && s->expiry_day == it->expiry_day) {
        s->points += rest;
      } else {
        spendable.insert(s, {it->expiry_day, 0, rest});
      }
    }
    it = pending.erase(it);
  }
  for (auto it = spendable.begin(); it != spendable.end() && it->expiry_day < today;) {
    st.available -= it->points;
    it = spendable.erase(it);
  }
  uint32_t days = p.lots.inactivity_days;
  out->last_activity_day = acc->last_activity_day;
  out->inactivity_lapse_day =
      days > 0 ? static_cast<uint16_t>(std::min<int64_t>(acc->last_activity_day + days, kNeverDay - 1)) : 0;
  if (days > 0 && (st.available > 0 || st.pending > 0) && today > int64_t{acc->last_activity_day} + days) {
    st.available -= std::max<int64_t>(st.available, 0);
    st.pending = 0;
    pending.clear();
    spendable.clear();
  }
  // The tier as the review would leave it today, and how long it lasts without more qualifying
  // points: the record is rolled forward period by period until the tier held is lower.
  out->tier_until_day = 0;
  if (ps->tiers) {
    if (const TierRecord* rec = ps->tiers->find(id)) {
      const TierPolicy& tp = p.tier_policy;
      TierRecord r = *rec;
      int64_t start = 0;
      const int64_t period = tier_period(*ps, today, &start);
      st.tier = roll_tier(p, r, st.qualifying, period, today < start + tp.grace_days);
      int64_t q = st.qualifying, until = 0;
      if (today < start + tp.grace_days && held_tier(r, false) < st.tier) until = start + tp.grace_days - 1;
      for (int64_t next = period + 1; until == 0 && st.tier > 0 && next <= period + window_months(tp) + 3; ++next) {
        const int64_t next_start = tier_period_start(tp, next);
        if (roll_tier(p, r, q, next, tp.grace_days > 0) < st.tier) until = next_start - 1;
        else if (held_tier(r, false) < st.tier) until = next_start + tp.grace_days - 1;
      }
      out->tier_until_day = static_cast<uint16_t>(std::clamp<int64_t>(until, 0, kNeverDay - 1));
    }
  }
  out->stamps = {};
  if (ps->stamps) {
    if (const StampRecord* sr = ps->stamps->find(id))
      for (size_t c = 0; c < kStampCardsMax; ++c) out->stamps[c] = sr->stamps[c];
  }
  out->state = st;
  out->as_of_ms = now_ms_;
  out->lots = std::move(pending);
  out->lots.insert(out->lots.end(), spendable.begin(), spendable.end());
  return true;
}

// ---- checkpoints -------------------------------------------------------------------------------
namespace {

constexpr uint32_t kStateMagic = 0x534b4354;  // "TCKS"
// 2: 64-byte account records, lot tables; 3: the tier and stamp tables (2 is still read).
constexpr uint32_t kStateVersion = 3;

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
  const uint32_t version = r.get<uint32_t>();
  if (version < 2 || version > kStateVersion)
    throw std::runtime_error("checkpoint state version " + std::to_string(version) + " is not known to this build");
  const int tables = version == 2 ? kTableTiers : kTableCount;  // version 2 had no tier table
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
                                                    "orders", "lots", "memberships", "tiers", "stamps"};
    for (int k = 0; k < kTableCount; ++k) {
      if (k >= tables) {
        if (shape[k] != 0)
          throw std::runtime_error("program " + std::to_string(id) + ": the checkpoint (state version " +
                                   std::to_string(version) + ") has no " + kNames[k] + " table");
        continue;
      }
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
  for (auto& ps : programs_) {
    ps->for_each_table([](uint8_t, auto& t) { t.recount(); });
    if (ps->lots) {
      ps->lots_count = 0;
      ps->lots->for_each([&](const LotBlock& b) { ps->lots_count += b.count; });
    }
  }
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
