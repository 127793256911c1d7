// Tally engine: the fixed-size records every layer shares.
//
// An Event is what a client asks for (earn, redeem, ...); an Effect is what the engine decided for
// it: the event, its result, the server time it was stamped with and the resulting account state.
// The durable log stores effects, replication ships them, and recovery applies them without
// re-deciding. Both are trivially copyable with explicit padding; their sizes are pinned below.
// The wire and log encodings (docs/protocol.md, docs/log-format.md) are explicit little-endian and
// never copy these structs' bytes directly.
//
// Units: points are int64_t counts of the smallest point; money amounts are int64_t minor units
// (cents) with an ISO 4217 numeric currency code; times are int64_t milliseconds since the Unix
// epoch (UTC). No floating point touches a balance.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

namespace tally {

// A 128-bit event reference: an order ID, hold ID, action ID... Clients with string IDs hash them
// with XXH3-128 (reference_from_string). The all-zero reference means "none".
struct Ref128 {
  uint64_t lo = 0;
  uint64_t hi = 0;

  constexpr bool empty() const { return lo == 0 && hi == 0; }
  friend constexpr bool operator==(const Ref128&, const Ref128&) = default;
};
static_assert(sizeof(Ref128) == 16);

// XXH3-128 of the bytes of `id`: the one mapping from string order IDs to references that every
// client must use (docs/protocol.md).
Ref128 reference_from_string(std::string_view id);

// What an event asks for. Values are stable: they travel on the wire and in the log.
enum class EventKind : uint8_t {
  kInvalid = 0,
  kEnroll = 1,    // create the account, credit the program's sign-up bonus
  kEarn = 2,      // purchase of `amount` minor units: points by the program's rate and tier
  kAward = 3,     // points for an action (review, referral, birthday...): `code` is the ActionKind
  kRedeem = 4,    // spend `amount` points
  kHold = 5,      // reserve `amount` points at checkout; expires after the program's hold timeout
  kCapture = 6,   // settle hold `target` for `amount` points (0 = the whole hold)
  kVoid = 7,      // release hold `target`
  kReverse = 8,   // refund `amount` minor units of earn order `target` (0 = all that is left)
  kAdjust = 9,    // operator correction of `amount` points (signed), `code` = reason (non-zero)
  kTransfer = 10, // move `amount` points to account `counterparty` of the same program
  kBalance = 11,  // read the account; writes nothing
  kMembership = 12, // buy or renew the paid membership: `amount` periods (0 = one), `ref` the purchase

  // Internal kinds: made by the engine or runtime, refused from clients.
  kTransferIn = 32,      // shard of the receiver: credit a transfer, or bounce it
  kTransferBounce = 33,  // shard of the sender: the receiver refused; refund the sender
  kHoldExpire = 34,      // a hold timed out; its points return to available
  kTick = 35,            // the runtime's clock tick: lets an idle shard expire holds and lots
  kExpire = 36,          // points lapsed: `amount` points, `code` = ExpireReason
  kMature = 37,          // pending points became available: `amount` points
  kTier = 38,            // an upgrade, or a tier review that changed the tier or the qualifying points:
                         // `code` is the tier after it, `amount` the upgrade bonus credited
  kStampCard = 39,       // a stamp card completed: `code` is the card (1..4), `amount` its reward points
  kBonus = 40,           // a purchase bonus: `code` is the BonusKind, `amount` its points
};

constexpr bool is_internal(EventKind k) { return static_cast<uint8_t>(k) >= 32; }
// The highest kind a client may send.
constexpr EventKind kClientKindMax = EventKind::kMembership;
// The highest internal kind.
constexpr EventKind kInternalKindMax = EventKind::kBonus;
// True for kinds that change state and therefore must carry their own reference.
constexpr bool is_mutating(EventKind k) {
  return k != EventKind::kBalance && k != EventKind::kInvalid && k != EventKind::kTick;
}
std::string_view to_string(EventKind k);

// Actions an award can be for. `kCustom` is a program-defined action.
enum class ActionKind : uint16_t {
  kReview = 1,
  kReferral = 2,
  kBirthday = 3,
  kSocial = 4,
  kCustom = 5,
};
constexpr uint16_t kActionKindCount = 6;  // index 0 unused

// What a purchase bonus is for (the `code` of a kBonus effect).
enum class BonusKind : uint16_t {
  kFirstPurchase = 1,  // the member's first accepted purchase
  kComeback = 2,       // a purchase after the program's comeback period without activity
};

// Why points lapsed (the `code` of a kExpire effect).
enum class ExpireReason : uint16_t {
  kLots = 1,        // lots past their expiry date
  kInactivity = 2,  // no activity for the program's inactivity period: every point lapses
};

// The closed set of results, in order of precedence: when several checks fail, the one listed
// first wins, always (docs/engine.md states the exact order per operation). Values are stable.
enum class Result : uint8_t {
  kOk = 0,
  kProgramNotFound = 1,
  kInvalidKind = 2,         // unknown kind, or an internal kind from a client
  kInvalidAccount = 3,      // account id 0
  kInvalidReference = 4,    // a mutating event without its reference, or without a needed target
  kInvalidAmount = 5,       // zero, negative or out-of-range amount for this kind
  kInvalidCode = 6,         // unknown action kind, or an adjustment without a reason code
  kCurrencyMismatch = 7,    // earn or reverse in another currency than the program's
  kSameAccount = 8,         // transfer to the sender itself
  kInvalidTime = 9,         // business time too far in the future
  kStaleReference = 10,     // business time older than the dedup window: cannot be checked
  kAccountNotFound = 11,
  kAccountExists = 12,
  kRateLimited = 13,        // events-per-minute cap of the account
  kBelowMinimum = 14,       // redeem under the program's minimum
  kInsufficientPoints = 15,
  kCapExceeded = 16,        // points-per-day cap already reached
  kActionLimitReached = 17, // e.g. birthday already awarded this year
  kHoldNotFound = 18,
  kHoldExpired = 19,
  kHoldClosed = 20,         // already captured or voided
  kOrderNotFound = 21,      // reverse of an unknown order (or one of another account)
  kNotReversible = 22,      // reverse target is not an earn
  kAlreadyReversed = 23,    // the order was refunded in full already
  kRefundWindowPassed = 24,
  kOverflow = 25,           // the result would leave the range of a balance
  kDuplicateOrder = 26,     // the reference was already used by a different event: fraud signal
  kCapacityExhausted = 27,  // a pre-sized table (accounts, references, holds) is full
  kForbidden = 28,          // outside the caller's program or role (network layer)
  kBusy = 29,               // backpressure (network layer)
  kStorageFailed = 30,      // the durable log failed; nothing was acknowledged (storage layer)
  kNotPrimary = 31,         // a write sent to a follower: the server's `info` names the primary
};
constexpr uint8_t kResultCount = 32;
std::string_view to_string(Result r);

// One client request, 96 bytes. Field meanings per kind are in EventKind's comments.
struct Event {
  Ref128 ref;                 // this event's own reference (order ID, hold ID, action ID)
  Ref128 target;              // the earlier event it acts on (capture, void, reverse)
  uint64_t account = 0;       // the member, unique within the program; 0 is invalid
  uint64_t counterparty = 0;  // transfer: the receiver (kTransfer) or sender (internal kinds)
  int64_t amount = 0;         // minor units (earn, reverse) or points (all others)
  int64_t business_time_ms = 0;  // when it happened at the till; 0 = the server time
  uint32_t program = 0;
  uint32_t store = 0;         // store, terminal and channel: for settlement and fraud analysis
  uint32_t terminal = 0;
  uint32_t key_id = 0;        // the API key that sent it (audit); 0 in-process
  uint16_t currency = 0;      // ISO 4217 numeric; 0 = the program's currency
  uint16_t code = 0;          // ActionKind (award) or reason code (adjust)
  EventKind kind = EventKind::kInvalid;
  uint8_t channel = 0;
  uint8_t reserved[2] = {};
  // Opaque to the engine: the network layer's routing tag, so a durable effect finds the request
  // that asked for it. Not fingerprinted, not logged, not on the wire; 0 in-process.
  uint64_t tag = 0;
};
static_assert(sizeof(Event) == 96);
static_assert(offsetof(Event, tag) == 88);
static_assert(std::is_trivially_copyable_v<Event>);

// 64-bit fingerprint of everything that identifies an event (all fields but key_id and tag), to tell an
// identical retry (replay) from a different event reusing the reference (duplicate order).
uint64_t fingerprint(const Event& e);

// The business day (days since 1970, UTC) an event's reference belongs to in the fraud set: its
// business time, or the server time `time_ms` when it has none.
uint16_t reference_day(const Event& e, int64_t time_ms);

// Effect flags.
enum EffectFlag : uint8_t {
  kEffectReplay = 1,        // an identical retry: result and points are the original ones
  kEffectClaimed = 2,       // this effect claimed `event.ref` in the fraud set (the winner)
  kEffectCapped = 4,        // earn points were cut by a per-event or per-day cap
  kEffectBounced = 8,       // kTransferIn: the receiver refused, a bounce was sent back
  kEffectNoAccount = 16,    // the account state fields are zero: the event names no live account
  kEffectStamped = 32,      // earn: the purchase stamped the member's cards; reverse: it took stamps back
  kEffectCampaign = 64,     // earn: a campaign's multiplier was in force for the purchase's day
};

// Account flags (AccountState::flags).
enum AccountFlag : uint8_t {
  kAccountPaidMember = 1,  // the paid membership covers the effect's day
  kAccountPurchased = 2,   // programs with a first-purchase bonus: the member has made a purchase
};

// The resulting state of one account after an effect.
struct AccountState {
  int64_t available = 0;
  int64_t held = 0;
  int64_t lifetime_earned = 0;    // points credited by enroll bonus, earn, award, transfer-in
  int64_t lifetime_redeemed = 0;  // points spent by redeem and capture
  int64_t qualifying = 0;         // points that count towards tiers (earned from purchases)
  int64_t pending = 0;            // earned but not spendable yet (a purchase's return window)
  uint8_t tier = 0;
  uint8_t flags = 0;              // AccountFlag
  uint16_t member_until = 0;      // paid membership: the last local day it covers (0: never a member)
  uint8_t reserved[4] = {};
};
static_assert(sizeof(AccountState) == 56);

// What the engine decided for one event, 192 bytes: the unit of the durable log and the stream.
struct Effect {
  Event event;
  int64_t time_ms = 0;     // server time stamped on the event's batch
  uint64_t seq = 0;        // per-shard sequence number, 1, 2, 3, ... without gaps
  int64_t points = 0;      // points this event moved for `event.account` (signed)
  AccountState state;      // the account after the event
  // When the verdict depends on another shard's claim of the reference, that claim (shard and a
  // sequence at or after it): nothing may release this effect before that one. 0 = none.
  uint64_t depends_seq = 0;
  uint16_t shard = 0;
  uint16_t depends_shard = 0;
  Result result = Result::kOk;
  uint8_t flags = 0;
  uint8_t reserved[2] = {};
};
static_assert(sizeof(Effect) == 192);
static_assert(std::is_trivially_copyable_v<Effect>);

// 128-bit integers for exact intermediate products (GCC and Clang extension).
__extension__ using int128 = __int128;
__extension__ using uint128 = unsigned __int128;

constexpr int64_t kMsPerMinute = 60'000;
constexpr int64_t kMsPerDay = 86'400'000;
// Largest magnitude any balance or single movement may reach: far above any real program, and
// low enough that sums of two never overflow int64_t.
constexpr int64_t kPointsMax = int64_t{1} << 60;

}  // namespace tally
