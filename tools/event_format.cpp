#include "tools/event_format.h"

#include <cinttypes>
#include <cstdio>
#include <iterator>

namespace tally {

namespace {

void add(std::string& out, const char* fmt, auto... v) {
  char buf[128];
  int n = std::snprintf(buf, sizeof buf, fmt, v...);
  out.append(buf, static_cast<size_t>(n));
}

}  // namespace

std::string ref_hex(const Ref128& r) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016" PRIx64 "%016" PRIx64, r.hi, r.lo);
  return buf;
}

std::string effect_flag_names(uint8_t flags) {
  static constexpr const char* kNames[] = {"replay", "claimed", "capped", "bounced", "no_account", "stamped",
                                           "campaign"};
  std::string s;
  for (size_t i = 0; i < std::size(kNames); ++i) {
    if (!(flags & (1u << i))) continue;
    if (!s.empty()) s += '|';
    s += kNames[i];
  }
  return s;
}

void append_json(std::string& out, const Effect& f, const RecordPos& at) {
  const Event& e = f.event;
  add(out, "{\"v\":%u,\"lsn\":%" PRIu64 ",\"index\":%u,\"epoch\":%" PRIu64, kEventSchemaVersion, at.lsn, at.index,
      at.epoch);
  add(out, ",\"shard\":%u,\"seq\":%" PRIu64 ",\"time_ms\":%" PRId64, f.shard, f.seq, f.time_ms);
  out += ",\"kind\":\"";
  out += to_string(e.kind);
  out += "\",\"result\":\"";
  out += to_string(f.result);
  add(out, "\",\"program\":%u,\"account\":%" PRIu64, e.program, e.account);
  out += ",\"ref\":\"" + ref_hex(e.ref) + "\"";
  if (!e.target.empty()) out += ",\"target\":\"" + ref_hex(e.target) + "\"";
  if (e.counterparty != 0) add(out, ",\"counterparty\":%" PRIu64, e.counterparty);
  add(out, ",\"amount\":%" PRId64 ",\"points\":%" PRId64, e.amount, f.points);
  add(out, ",\"available\":%" PRId64 ",\"held\":%" PRId64 ",\"pending\":%" PRId64, f.state.available, f.state.held,
      f.state.pending);
  add(out, ",\"lifetime_earned\":%" PRId64 ",\"lifetime_redeemed\":%" PRId64 ",\"qualifying\":%" PRId64,
      f.state.lifetime_earned, f.state.lifetime_redeemed, f.state.qualifying);
  add(out, ",\"tier\":%u", f.state.tier);
  if (f.state.member_until != 0) add(out, ",\"member_until\":%u", f.state.member_until);
  out += ",\"flags\":[";
  std::string names = effect_flag_names(f.flags);
  for (size_t i = 0, n = 0; i <= names.size(); ++i) {
    if (i == names.size() || names[i] == '|') {
      if (i > n) out += (n > 0 ? ",\"" : "\"") + names.substr(n, i - n) + "\"";
      n = i + 1;
    }
  }
  out += "]";
  if (e.business_time_ms != 0) add(out, ",\"business_time_ms\":%" PRId64, e.business_time_ms);
  if (e.store != 0) add(out, ",\"store\":%u", e.store);
  if (e.terminal != 0) add(out, ",\"terminal\":%u", e.terminal);
  if (e.currency != 0) add(out, ",\"currency\":%u", e.currency);
  if (e.code != 0) add(out, ",\"code\":%u", e.code);
  if (e.channel != 0) add(out, ",\"channel\":%u", e.channel);
  if (e.key_id != 0) add(out, ",\"key_id\":%u", e.key_id);
  if (f.depends_seq != 0) add(out, ",\"depends_shard\":%u,\"depends_seq\":%" PRIu64, f.depends_shard, f.depends_seq);
  out += "}";
}

const std::string& csv_header() {
  static const std::string h =
      "v,lsn,index,epoch,shard,seq,time_ms,kind,result,program,account,ref,target,counterparty,amount,points,"
      "available,held,lifetime_earned,lifetime_redeemed,qualifying,tier,flags,business_time_ms,store,terminal,"
      "currency,code,channel,key_id,depends_shard,depends_seq,pending,member_until";
  return h;
}

void append_csv(std::string& out, const Effect& f, const RecordPos& at) {
  const Event& e = f.event;
  add(out, "%u,%" PRIu64 ",%u,%" PRIu64 ",%u,%" PRIu64 ",%" PRId64 ",", kEventSchemaVersion, at.lsn, at.index, at.epoch,
      f.shard, f.seq, f.time_ms);
  out += to_string(e.kind);
  out += ',';
  out += to_string(f.result);
  add(out, ",%u,%" PRIu64 ",", e.program, e.account);
  out += ref_hex(e.ref) + ",";
  if (!e.target.empty()) out += ref_hex(e.target);
  add(out, ",%" PRIu64 ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64, e.counterparty, e.amount, f.points,
      f.state.available, f.state.held);
  add(out, ",%" PRId64 ",%" PRId64 ",%" PRId64 ",%u,", f.state.lifetime_earned, f.state.lifetime_redeemed,
      f.state.qualifying, f.state.tier);
  out += effect_flag_names(f.flags);
  add(out, ",%" PRId64 ",%u,%u,%u,%u,%u,%u,%u,%" PRIu64, e.business_time_ms, e.store, e.terminal, e.currency, e.code,
      e.channel, e.key_id, f.depends_shard, f.depends_seq);
  add(out, ",%" PRId64 ",%u", f.state.pending, f.state.member_until);
}

}  // namespace tally
