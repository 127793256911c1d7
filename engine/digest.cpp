#include "engine/digest.h"

#include <xxhash.h>

#include <algorithm>
#include <utility>
#include <vector>

namespace tally {

uint64_t state_digest(std::span<const Shard* const> shards, std::span<const Program> programs) {
  std::vector<uint32_t> ids;
  for (const Program& p : programs) ids.push_back(p.id);
  std::sort(ids.begin(), ids.end());
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  auto put = [&](int64_t v) { XXH3_64bits_update(st, &v, sizeof v); };
  std::vector<std::pair<uint64_t, AccountState>> accounts;
  for (uint32_t id : ids) {
    ProgramStats sum;
    accounts.clear();
    for (const Shard* s : shards) {
      if (const ProgramStats* ps = s->stats(id)) sum += *ps;
      s->for_each_account(id, [&](uint64_t a, const AccountState& state) { accounts.emplace_back(a, state); });
    }
    std::sort(accounts.begin(), accounts.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    put(id);
    for (int64_t v : {sum.issued, sum.redeemed, sum.expired, sum.clawed_back, sum.adjusted, sum.transfer_out,
                      sum.transfer_in, sum.transfer_bounced, static_cast<int64_t>(sum.members)})
      put(v);
    for (const auto& [a, s] : accounts) {
      for (int64_t v : {static_cast<int64_t>(a), s.available, s.held, s.lifetime_earned, s.lifetime_redeemed,
                        s.qualifying, s.pending, static_cast<int64_t>(s.member_until), static_cast<int64_t>(s.tier), static_cast<int64_t>(s.flags)})
        put(v);
    }
  }
  uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return h;
}

}  // namespace tally
