// The checks shared by the crash, power-loss and failing-disk tests: run tally_crash_child,
// collect the acknowledgements it printed (outside the process that dies), and check a data
// directory's log against them.
#pragma once

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "storage/checkpoint.h"
#include "storage/history.h"
#include "storage/log_codec.h"
#include "storage/recovery.h"
#include "storage/store.h"
#include "tests/crash_workload.h"

extern char** environ;

namespace tally::storage {

struct Ack {
  uint32_t kind = 0;
  uint32_t result = 0;
  int64_t points = 0;
  uint32_t flags = 0;
  uint64_t ref = 0;  // the event's ref.lo
};

// One acknowledgement line of tally_crash_child: "A index kind result points flags ref".
inline bool parse_ack(const std::string& line, uint64_t* index, Ack* a) {
  unsigned long long i, ref;
  unsigned kind, result, flags;
  long long points;
  if (std::sscanf(line.c_str(), "A %llu %u %u %lld %u %llu", &i, &kind, &result, &points, &flags, &ref) != 6)
    return false;
  *index = i;
  *a = Ack{kind, result, points, flags, ref};
  return true;
}

struct Round {
  std::vector<std::pair<uint64_t, Ack>> acks;  // (event index, ack) in arrival order
  bool done = false;                           // the child finished before being killed
  int status = 0;
};

// Runs the child from event `start`, kills it after `kill_after` acknowledgements (0: never).
// `flags` go to the child's command line, `env` (NAME=value) is added to its environment.
inline Round run_child(const std::string& dir, uint64_t start, uint64_t count, size_t kill_after,
                       const std::vector<std::string>& flags = {}, const std::vector<std::string>& env = {}) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  std::string start_s = std::to_string(start), count_s = std::to_string(count);
  std::vector<char*> argv = {const_cast<char*>(TALLY_CRASH_CHILD), const_cast<char*>(dir.c_str()),
                             start_s.data(), count_s.data()};
  std::vector<std::string> flag_copy = flags;
  for (std::string& f : flag_copy) argv.push_back(f.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_copy = env;
  std::vector<char*> envp;
  for (std::string& e : env_copy) envp.push_back(e.data());
  for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
  envp.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, TALLY_CRASH_CHILD, &fa, nullptr, argv.data(), envp.data()) != 0)
    throw std::runtime_error("spawn " + std::string(TALLY_CRASH_CHILD));
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);

  Round r;
  std::string buf;
  char chunk[65536];
  bool killed = false;
  for (;;) {
    ssize_t n = read(fds[0], chunk, sizeof chunk);
    if (n <= 0) break;  // the child is gone
    buf.append(chunk, static_cast<size_t>(n));
    size_t pos = 0;
    for (size_t nl; (nl = buf.find('\n', pos)) != std::string::npos; pos = nl + 1) {
      std::string line = buf.substr(pos, nl - pos);
      if (line == "DONE") {
        r.done = true;
        continue;
      }
      uint64_t index;
      Ack a;
      if (parse_ack(line, &index, &a)) r.acks.push_back({index, a});
    }
    buf.erase(0, pos);
    if (!killed && kill_after > 0 && r.acks.size() >= kill_after) {
      kill(pid, SIGKILL);  // mid-stream: whatever the child is doing
      killed = true;
    }
  }
  close(fds[0]);
  waitpid(pid, &r.status, 0);
  return r;
}

// Everything the checks know across rounds.
struct Ledgerbook {
  std::map<std::pair<uint64_t, uint32_t>, Ack> first;  // (index, kind) -> first acknowledgement
  std::vector<std::string> violations;
  uint64_t acks = 0;
  uint64_t highest = 0;

  void record(const Round& r) { record(r.acks); }
  void record(const std::vector<std::pair<uint64_t, Ack>>& arrived) {
    for (const auto& [index, a] : arrived) {
      ++acks;
      highest = std::max(highest, index);
      auto [it, fresh] = first.emplace(std::make_pair(index, a.kind), a);
      if (fresh) continue;
      const Ack& f = it->second;
      // A decision that claimed its order ID is final: a retry must get it back as a replay.
      if ((f.flags & kEffectClaimed) &&
          (!(a.flags & kEffectReplay) || a.result != f.result || a.points != f.points))
        violations.push_back("event " + std::to_string(index) + " acknowledged again with another answer");
    }
  }

  // The log after a kill: verifies, holds every acknowledged decision, claims each reference once.
  // When the log was trimmed behind a checkpoint, the references its trimmed part claimed are in
  // the dedup database: an acknowledged decision that claimed one must be there or in the log,
  // exactly once; decisions still in the log are checked in full.
  void check_log(const std::string& dir) {
    Store s({.dir = dir, .read_only = true});
    LogCheck c = verify_log(s);
    if (!c.ok) {
      violations.push_back("log does not verify at LSN " + std::to_string(c.bad_lsn) + ": " + c.error);
      return;
    }
    // Every non-replay effect per event, in log order. An event whose decision claimed nothing (a
    // rejected redeem, say) may be decided again when it is re-sent after a crash, and the first
    // of those decisions may be one the crash kept from being acknowledged: the acknowledged one
    // must be among them, not necessarily the first. A claimed decision is final (later ones are
    // replays), so for it "among them" is "the one".
    std::map<std::pair<uint64_t, uint32_t>, std::vector<Effect>> logged;
    std::map<std::pair<uint64_t, uint64_t>, int> claims;
    bool trimmed = s.meta("trim_lsn").has_value();
    s.scan_dedup([&](std::span<const uint8_t> value) {
      for (size_t off = 0; off + kClaimBytes <= value.size(); off += kClaimBytes) {
        uint64_t lo, hi;
        std::memcpy(&lo, value.data() + off + 4, 8);
        std::memcpy(&hi, value.data() + off + 12, 8);
        ++claims[{lo, hi}];
      }
    });
    // What the history index holds of the trimmed log: first non-replay entry per event.
    std::map<std::pair<uint64_t, uint32_t>, std::vector<HistoryEntry>> indexed;
    if (trimmed)
      for_each_indexed(s, [&](const HistoryEntry& e) {
        if (e.store == 0 || (e.flags & kEffectReplay)) return;
        indexed[std::make_pair(uint64_t{e.store - 1}, static_cast<uint32_t>(e.kind))].push_back(e);
      });
    std::vector<Effect> effects;
    s.scan(0, [&](uint64_t, std::span<const uint8_t> bytes) {
      effects.clear();
      BatchHeader h;
      decode_batch(bytes, &h, &effects);
      for (const Effect& f : effects) {
        if (f.flags & kEffectClaimed) ++claims[{f.event.ref.lo, f.event.ref.hi}];
        if (f.event.store == 0 || (f.flags & kEffectReplay)) continue;
        logged[std::make_pair(uint64_t{f.event.store - 1}, static_cast<uint32_t>(f.event.kind))].push_back(f);
      }
      return true;
    });
    for (const auto& [ref, n] : claims)
      if (n > 1) violations.push_back("reference " + std::to_string(ref.first) + " claimed " + std::to_string(n) + " times");
    for (const auto& [key, a] : first) {
      if (a.kind == static_cast<uint32_t>(EventKind::kBalance) || (a.flags & kEffectReplay)) continue;
      // Whether `decisions` (logged effects or indexed entries of the event) hold the acknowledged one.
      auto holds = [&](const auto& decisions) {
        return std::any_of(decisions.begin(), decisions.end(), [&](const auto& d) {
          return static_cast<uint32_t>(d.result) == a.result && d.points == a.points;
        });
      };
      auto it = logged.find(key);
      auto ix = trimmed ? indexed.find(key) : indexed.end();
      if (it == logged.end() && trimmed) {
        // Trimmed: its claim must have moved to the dedup database (a rejection claims nothing),
        // and the history index must hold its decision.
        if ((a.flags & kEffectClaimed) && claims[{a.ref, crash::kTag}] != 1)
          violations.push_back("acknowledged event " + std::to_string(key.first) +
                               " is neither in the log nor among the checkpointed references");
        if (ix == indexed.end())
          violations.push_back("acknowledged event " + std::to_string(key.first) +
                               " is neither in the log nor in the history index");
        else if (!holds(ix->second))
          violations.push_back("acknowledged event " + std::to_string(key.first) +
                               " is in the history index with another result");
      } else if (it == logged.end()) {
        violations.push_back("acknowledged event " + std::to_string(key.first) + " is not in the log");
      } else if (!holds(it->second) && (ix == indexed.end() || !holds(ix->second))) {
        // A decision that claimed nothing is not final: the event, re-sent after a crash, may be
        // decided again and otherwise. The acknowledged one may then be the earlier decision,
        // trimmed behind a checkpoint since; the history index holds it.
        violations.push_back("acknowledged event " + std::to_string(key.first) + " is in the log with another result");
      }
    }
  }
};


}  // namespace tally::storage
