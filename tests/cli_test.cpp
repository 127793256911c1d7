// tally, the command-line client, run as an operator runs it: the built binary against a ledger
// and server started in-process on a free loopback port (Asio back end), checking what it prints
// and its exit status: every command, retries that come back as replays, refusals (duplicate
// order, insufficient points, forbidden), history paging, lookup, bad credentials and usage.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/program.h"
#include "net/backend.h"
#include "net/scram.h"
#include "net/tcp_server.h"
#include "tests/run_binary.h"
#include "tests/temp_dir.h"
#include "tests/test_server.h"
#include "tools/ledger_service.h"

extern char** environ;

using namespace tally;
using namespace tally::net;

namespace {

constexpr uint32_t kProgram = 1;
constexpr uint32_t kPosKey = 1, kOperatorKey = 2;
const std::string kPosSecret = tally::testing::test_secret(kPosKey);
const std::string kOperatorSecret = tally::testing::test_secret(kOperatorKey);

// A ledger and a server on a free loopback port (tests/test_server.h), Asio back end.
class Stack : public tally::testing::ServerStack {
 public:
  explicit Stack(const std::string& dir) : ServerStack(dir, stack_options()) {}

 private:
  static tally::testing::StackOptions stack_options() {
    tally::testing::StackOptions o;
    o.keys = {tally::testing::test_key(kPosKey, kProgram, Role::kPos),
              tally::testing::test_key(kOperatorKey, kProgram, Role::kOperator)};
    return o;
  }
};

using CliRun = tally::testing::BinaryRun;

// Runs the tally binary with exactly these arguments and environment, capturing both streams.
CliRun run_tally(const std::vector<std::string>& args, std::vector<std::string> env) {
  return tally::testing::run_binary(TALLY_CLI, args, std::move(env));
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> v;
  for (size_t at = 0; at < text.size();) {
    size_t nl = text.find('\n', at);
    if (nl == std::string::npos) nl = text.size();
    v.push_back(text.substr(at, nl - at));
    at = nl + 1;
  }
  return v;
}

// The integer value of "field" in a JSON object line (the format tally --json writes).
std::optional<int64_t> json_int(const std::string& line, const std::string& field) {
  std::string k = "\"" + field + "\":";
  size_t at = line.find(k);
  if (at == std::string::npos) return std::nullopt;
  int64_t v = 0;
  const char* p = line.data() + at + k.size();
  auto [end, ec] = std::from_chars(p, line.data() + line.size(), v);
  if (ec != std::errc()) return std::nullopt;
  return v;
}

std::string json_str(const std::string& line, const std::string& field) {
  std::string k = "\"" + field + "\":\"";
  size_t at = line.find(k);
  if (at == std::string::npos) return "";
  size_t from = at + k.size();
  return line.substr(from, line.find('"', from) - from);
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class CliTest : public ::testing::Test {
 protected:
  // tally as the pos (or operator) key, credentials on the command line.
  CliRun pos(std::vector<std::string> args) { return as(kPosKey, kPosSecret, std::move(args)); }
  CliRun op(std::vector<std::string> args) {
    return as(kOperatorKey, kOperatorSecret, std::move(args));
  }
  CliRun as(uint32_t key_id, const std::string& secret, std::vector<std::string> args) {
    std::vector<std::string> all = {"--port",   port(), "--key",     std::to_string(key_id),
                                    "--secret", secret, "--timeout", "20000"};
    all.insert(all.end(), args.begin(), args.end());
    return run_tally(all, {});
  }
  int64_t available(uint64_t account) {
    CliRun r = pos({"--json", "balance", std::to_string(account)});
    EXPECT_EQ(r.status, 0) << r.out << r.err;
    return json_int(r.out, "available").value_or(-1);
  }
  std::string port() const { return std::to_string(stack_->server->port()); }

  tally::testing::TempDir dir_{"tally-cli-test"};
  std::unique_ptr<Stack> stack_ = std::make_unique<Stack>(dir_.sub("data"));
};

}  // namespace

TEST_F(CliTest, EnrollEarnARetryIsAReplayAndAReusedOrderIsADuplicate) {
  const int64_t bonus = default_program().signup_bonus_points;
  CliRun r = pos({"enroll", "42"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "enroll: ok, +" + std::to_string(bonus) + " points")) << r.out;

  // 123.45 EUR at 1 point per euro.
  r = pos({"earn", "42", "123.45", "--order", "order-1", "--store", "7"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "earn: ok, +123 points; available " + std::to_string(bonus + 123)))
      << r.out;
  EXPECT_FALSE(has(r.out, "replay")) << r.out;
  // The money went on the wire exactly, in cents: 12345, and 50 for "0.5" (0 points: floor).
  r = pos({"--json", "lookup", "order-1"});
  EXPECT_EQ(json_int(r.out, "amount").value_or(-1), 12345) << r.out;
  ASSERT_EQ(pos({"earn", "42", "0.5", "--order", "half-euro"}).status, 0);
  r = pos({"--json", "lookup", "half-euro"});
  EXPECT_EQ(json_int(r.out, "amount").value_or(-1), 50) << r.out;
  EXPECT_EQ(json_int(r.out, "points").value_or(-1), 0) << r.out;

  // The same command line again: a replay, not a second credit.
  r = pos({"earn", "42", "123.45", "--order", "order-1", "--store", "7"});
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "(replay of an earlier identical request)")) << r.out;
  EXPECT_TRUE(has(r.out, "+123 points")) << r.out;
  r = pos({"--json", "earn", "42", "123.45", "--order", "order-1", "--store", "7"});
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "\"replay\":true")) << r.out;
  EXPECT_EQ(json_int(r.out, "points").value_or(-1), 123) << r.out;
  EXPECT_EQ(available(42), bonus + 123);

  // Another purchase under the same order ID: the fraud signal, and nothing credited.
  r = pos({"earn", "42", "99.99", "--order", "order-1"});
  EXPECT_EQ(r.status, 1) << r.out << r.err;
  EXPECT_TRUE(has(r.out,
                  "earn: duplicate_order (the order ID was already used by a different "
                  "event)"))
      << r.out;
  EXPECT_EQ(available(42), bonus + 123);

  // Enrolling again is a replay too (the default --ref is enroll:ACCOUNT); another ref is refused.
  EXPECT_EQ(pos({"enroll", "42"}).status, 0);
  r = pos({"enroll", "42", "--ref", "second-signup"});
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(has(r.out, "account_exists")) << r.out;
  r = pos({"balance", "4242"});
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(has(r.out, "account_not_found")) << r.out;
}

TEST_F(CliTest, RedeemHoldCaptureVoidReverseTransferAdjust) {
  const int64_t bonus = default_program().signup_bonus_points;
  ASSERT_EQ(pos({"enroll", "42"}).status, 0);
  ASSERT_EQ(pos({"enroll", "43"}).status, 0);
  ASSERT_EQ(pos({"earn", "42", "100", "--order", "order-2"}).status, 0);
  int64_t balance = bonus + 100;

  CliRun r = pos({"redeem", "42", "1000", "--ref", "too-much"});
  EXPECT_EQ(r.status, 1) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "redeem: insufficient_points")) << r.out;
  EXPECT_EQ(available(42), balance);

  r = pos({"--json", "redeem", "42", "10", "--ref", "reward-1"});
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  balance -= 10;
  EXPECT_EQ(json_int(r.out, "available").value_or(-1), balance) << r.out;

  r = pos({"--json", "hold", "42", "30", "--ref", "basket-1"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(json_int(r.out, "held").value_or(-1), 30) << r.out;
  EXPECT_EQ(json_int(r.out, "available").value_or(-1), balance - 30) << r.out;
  r = pos({"--json", "capture", "42", "--hold", "basket-1", "--points", "20", "--ref", "paid-1"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  balance -= 20;  // 20 captured, 10 back
  EXPECT_EQ(json_int(r.out, "points").value_or(-1), 20) << r.out;
  EXPECT_EQ(json_int(r.out, "held").value_or(-1), 0) << r.out;
  EXPECT_EQ(json_int(r.out, "available").value_or(-1), balance) << r.out;
  r = pos({"capture", "42", "--hold", "basket-1", "--ref", "paid-again"});
  EXPECT_EQ(r.status, 1) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "hold_closed")) << r.out;

  ASSERT_EQ(pos({"hold", "42", "15", "--ref", "basket-2"}).status, 0);
  r = pos({"void", "42", "--hold", "basket-2", "--ref", "cancelled-2"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(
      has(r.out, "void: ok, 15 points released; available " + std::to_string(balance) + ", held 0"))
      << r.out;

  // Half the order refunded: half its points clawed back.
  r = pos({"--json", "reverse", "42", "--order", "order-2", "--amount", "50.00", "--ref", "rf-1"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  balance -= 50;
  EXPECT_EQ(json_int(r.out, "points").value_or(-1), 50) << r.out;
  EXPECT_EQ(json_int(r.out, "available").value_or(-1), balance) << r.out;

  r = pos({"transfer", "42", "43", "5", "--ref", "gift-1"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  balance -= 5;
  EXPECT_TRUE(has(r.out, "transfer: ok, -5 points to 43; available " + std::to_string(balance)))
      << r.out;
  // The receiver's credit is applied right after the reply (docs/protocol.md): wait for it by
  // asking, with a deadline.
  int64_t receiver = -1;
  for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
       receiver != bonus + 5 && std::chrono::steady_clock::now() < deadline;)
    receiver = available(43);
  EXPECT_EQ(receiver, bonus + 5);

  // adjust: operator keys only.
  r = pos({"adjust", "42", "7", "--reason", "1", "--ref", "fix-1"});
  EXPECT_EQ(r.status, 1) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "adjust: forbidden")) << r.out;
  EXPECT_EQ(available(42), balance);
  r = op({"adjust", "42", "7", "--reason", "1", "--ref", "fix-1"});
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  balance += 7;
  EXPECT_TRUE(has(r.out, "adjust: ok, +7 points; available " + std::to_string(balance))) << r.out;
  r = op({"adjust", "42", "-3", "--reason", "1", "--ref", "fix-2"});
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  balance -= 3;
  EXPECT_EQ(available(42), balance);

  r = pos({"--json", "award", "42", "review", "--ref", "review-1"});
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  const int64_t review = default_program().actions[static_cast<size_t>(ActionKind::kReview)].points;
  EXPECT_EQ(json_int(r.out, "points").value_or(-1), review) << r.out;
  EXPECT_EQ(available(42), balance + review);
}

TEST_F(CliTest, HistoryPagesWithBeforeAndLookupTellsAnOrdersStory) {
  ASSERT_EQ(pos({"enroll", "42"}).status, 0);
  for (const char* order : {"h-1", "h-2", "h-3"})
    ASSERT_EQ(pos({"earn", "42", "10.00", "--order", order}).status, 0);
  ASSERT_EQ(pos({"earn", "42", "20.00", "--order", "h-1"}).status, 1);  // duplicate_order
  ASSERT_EQ(pos({"reverse", "42", "--order", "h-1", "--ref", "h-1-refund"}).status, 0);

  // The whole statement, newest first: 6 effects, no next page.
  CliRun all = pos({"--json", "history", "42", "--limit", "100"});
  ASSERT_EQ(all.status, 0) << all.out << all.err;
  std::vector<std::string> full = lines(all.out);
  ASSERT_EQ(full.size(), 6u) << all.out;
  EXPECT_EQ(json_str(full.front(), "kind"), "reverse");
  EXPECT_EQ(json_str(full.back(), "kind"), "enroll");
  EXPECT_FALSE(has(all.out, "next_before"));
  auto pos_of = [](const std::string& line) {
    return std::to_string(json_int(line, "lsn").value_or(-1)) + ":" +
           std::to_string(json_int(line, "index").value_or(-1));
  };

  // Pages of 2, each continuing where the last ended.
  std::vector<std::string> paged;
  std::string before;
  for (int page = 0; page < 3; ++page) {
    std::vector<std::string> args = {"--json", "history", "42", "--limit", "2"};
    if (!before.empty()) args.insert(args.end(), {"--before", before});
    CliRun r = pos(args);
    ASSERT_EQ(r.status, 0) << r.out << r.err;
    std::vector<std::string> got = lines(r.out);
    ASSERT_FALSE(got.empty());
    std::string next = json_str(got.back(), "next_before");
    if (!next.empty()) got.pop_back();
    ASSERT_EQ(got.size(), 2u) << r.out;
    paged.insert(paged.end(), got.begin(), got.end());
    if (page < 2) {
      EXPECT_EQ(next, pos_of(got.back())) << r.out;
    } else {
      EXPECT_EQ(next, "") << "the last page says there is no next one: " << r.out;
    }
    before = next;
  }
  ASSERT_EQ(paged.size(), full.size());
  for (size_t i = 0; i < full.size(); ++i) EXPECT_EQ(paged[i], full[i]) << i;

  // For people: a table, and the --before of the next page.
  CliRun human = pos({"history", "42", "--limit", "2"});
  ASSERT_EQ(human.status, 0) << human.err;
  EXPECT_TRUE(has(human.out, "next page: --before " + pos_of(full[1]))) << human.out;
  EXPECT_TRUE(has(human.out, "reverse")) << human.out;

  // The story of order h-1: the credit, the reuse refused, the refund (which targets it).
  CliRun story = pos({"--json", "lookup", "h-1"});
  ASSERT_EQ(story.status, 0) << story.out << story.err;
  std::vector<std::string> s = lines(story.out);
  ASSERT_EQ(s.size(), 3u) << story.out;
  EXPECT_EQ(json_str(s[0], "kind"), "earn");
  EXPECT_EQ(json_str(s[0], "result"), "ok");
  EXPECT_EQ(json_int(s[0], "amount").value_or(-1), 1000);
  EXPECT_EQ(json_str(s[1], "result"), "duplicate_order");
  EXPECT_EQ(json_str(s[2], "kind"), "reverse");
  EXPECT_EQ(json_int(s[2], "points").value_or(-1), 10);
  // References print as 32 hex digits, hi then lo: the earn's ref is the refund's target.
  Ref128 ref = reference_from_string("h-1");
  char want[40];
  std::snprintf(want, sizeof want, "%016llx%016llx", static_cast<unsigned long long>(ref.hi),
                static_cast<unsigned long long>(ref.lo));
  EXPECT_EQ(json_str(s[0], "ref"), want);
  EXPECT_EQ(json_str(s[2], "target"), want);
  CliRun hex = pos({"--json", "lookup", "--hex", want});
  EXPECT_EQ(hex.status, 0);
  EXPECT_EQ(hex.out, story.out);

  CliRun none = pos({"lookup", "never-used"});
  EXPECT_EQ(none.status, 0) << none.err;
  EXPECT_TRUE(has(none.out, "no effect names 'never-used'")) << none.out;
}

TEST_F(CliTest, StatementShowsEachLotAndItsExpiryDay) {
  ASSERT_EQ(pos({"enroll", "31"}).status, 0);
  CliRun r = pos({"statement", "31"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  // The demo program has no expiry: the sign-up bonus is one lot that never expires.
  EXPECT_TRUE(has(r.out, "account 31: 50 points available, 0 pending, 0 held")) << r.out;
  EXPECT_TRUE(has(r.out, "50 points never expire")) << r.out;
  r = pos({"--json", "statement", "31"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(json_int(r.out, "available"), 50);
  EXPECT_TRUE(has(r.out, "\"lots\":[{\"points\":50,\"expires\":null}]")) << r.out;
  EXPECT_TRUE(has(r.out, "\"tier_until\":null")) << "lifetime tiers are kept for good: " << r.out;
  r = pos({"statement", "32"});
  EXPECT_EQ(r.status, 1) << "an unknown member is a refusal";
  EXPECT_TRUE(has(r.out, "account_not_found")) << r.out;
  // The demo program sells no paid membership: the server's answer, through the CLI.
  r = pos({"membership", "31", "--periods", "2", "--ref", "sub-31"});
  EXPECT_EQ(r.status, 1) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "invalid_kind")) << r.out;
  EXPECT_EQ(pos({"membership", "31", "--periods", "0", "--ref", "sub-31"}).status, 2) << "periods are 1-100";
}

TEST_F(CliTest, CredentialsFromTheEnvironmentAndFailuresToConnectOrAuthenticate) {
  std::vector<std::string> env = {"TALLY_KEY=1", std::string("TALLY_SECRET=") + kPosSecret};
  CliRun r = run_tally({"--port", port(), "enroll", "7"}, env);
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  r = run_tally({"--port", port(), "balance", "7"}, env);
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "available " + std::to_string(default_program().signup_bonus_points)))
      << r.out;

  r = as(kPosKey, "not-the-secret", {"balance", "7"});
  EXPECT_EQ(r.status, 3) << r.out << r.err;
  EXPECT_TRUE(has(r.err, "authentication failed")) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  r = as(99, kPosSecret, {"balance", "7"});  // no such key
  EXPECT_EQ(r.status, 3) << r.out << r.err;

  // A port where nothing listens: bound, never listening, so no one else takes it meanwhile.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  r = run_tally({"--port", std::to_string(ntohs(a.sin_port)), "balance", "7"}, env);
  close(fd);
  EXPECT_EQ(r.status, 3) << r.out << r.err;
  EXPECT_TRUE(has(r.err, "cannot connect")) << r.err;

  // Another program than the key's: the server refuses it.
  r = run_tally({"--port", port(), "--program", "2", "balance", "7"}, env);
  EXPECT_EQ(r.status, 1) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "forbidden")) << r.out;
  r = run_tally({"--port", port(), "--program", "2", "history", "7"}, env);
  EXPECT_EQ(r.status, 1) << r.out << r.err;
}

TEST_F(CliTest, UsageErrorsSendNothing) {
  ASSERT_EQ(pos({"enroll", "42"}).status, 0);
  const uint64_t events_before = stack_->server->stats().events_in;
  CliRun r = pos({"earn", "42", "12.50"});
  EXPECT_EQ(r.status, 2) << r.out << r.err;
  EXPECT_TRUE(has(r.err, "--order")) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  const std::vector<std::vector<std::string>> bad = {
      {"redeem", "42", "5"},                     // no --ref
      {"capture", "42", "--ref", "x"},           // no --hold
      {"reverse", "42", "--ref", "x"},           // no --order
      {"adjust", "42", "5", "--ref", "x"},       // no --reason
      {"earn", "42", "12.345", "--order", "x"},  // 3 decimals
      {"earn", "42", "1e3", "--order", "x"},     // not decimal money
      {"earn", "42", "-5", "--order", "x"},      // negative money
      {"earn", "42", "5", "--order", ""},        // an empty ID
      {"earn", "42", "--order", "x"},            // no AMOUNT
      {"earn", "42", "5", "--order", "x", "--at", "2026-02-30T00:00:00Z"},
      {"redeem", "42", "1.5", "--ref", "x"},     // points are whole
      {"award", "42", "dancing", "--ref", "x"},  // no such action
      {"transfer", "42", "43", "--ref", "x"},    // no POINTS
      {"history", "42", "--before", "12"},       // not LSN:INDEX
      {"history", "42", "--limit", "0"},
      {"balance", "42", "--order", "x"},  // not balance's option
      {"frobnicate", "42"},
      {},
  };
  for (const std::vector<std::string>& args : bad) {
    CliRun b = pos(args);
    std::string line;
    for (const std::string& a : args) line += a + " ";
    EXPECT_EQ(b.status, 2) << line << "\n" << b.out << b.err;
    EXPECT_FALSE(b.err.empty()) << line;
  }
  // No credentials at all.
  r = run_tally({"--port", port(), "balance", "42"}, {});
  EXPECT_EQ(r.status, 2) << r.out << r.err;
  EXPECT_TRUE(has(r.err, "TALLY_KEY")) << r.err;
  EXPECT_EQ(stack_->server->stats().events_in, events_before);
}

TEST_F(CliTest, StatsShowsTheProgramsTotals) {
  const int64_t bonus = default_program().signup_bonus_points;
  ASSERT_EQ(pos({"enroll", "61"}).status, 0);
  ASSERT_EQ(pos({"earn", "61", "20.00", "--order", "st-1"}).status, 0);
  ASSERT_EQ(pos({"earn", "61", "20.00", "--order", "st-1"}).status, 0);       // replay
  ASSERT_EQ(pos({"earn", "61", "30.00", "--order", "st-1"}).status, 1);       // duplicate order
  ASSERT_EQ(pos({"redeem", "61", "5", "--ref", "st-r"}).status, 0);
  CliRun r = pos({"--json", "stats"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(json_int(r.out, "issued").value_or(-1), bonus + 20) << r.out;
  EXPECT_EQ(json_int(r.out, "redeemed").value_or(-1), 5) << r.out;
  EXPECT_EQ(json_int(r.out, "outstanding").value_or(-1), available(61)) << r.out;
  EXPECT_EQ(json_int(r.out, "members").value_or(-1), 1) << r.out;
  EXPECT_EQ(json_int(r.out, "duplicates").value_or(-1), 1) << r.out;
  EXPECT_EQ(json_int(r.out, "replays").value_or(-1), 1) << r.out;
  CliRun text = pos({"stats"});
  EXPECT_EQ(text.status, 0);
  EXPECT_TRUE(has(text.out, "members    1")) << text.out;
  EXPECT_EQ(pos({"stats", "extra"}).status, 2);
}

TEST_F(CliTest, HelpExplainsEveryCommandTheExitCodesAndTheDemoKeys) {
  CliRun r = run_tally({"--help"}, {});
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* c : {"enroll", "earn", "award", "redeem", "hold", "capture", "void", "reverse",
                        "adjust", "transfer", "balance", "history", "lookup"}) {
    EXPECT_TRUE(has(r.out, std::string("\n  ") + c + " ")) << c;
    EXPECT_TRUE(has(r.out, std::string("e.g. tally ") + c + " ")) << c;
  }
  for (const char* part :
       {"--host", "--port", "--key", "--secret", "--program", "--json", "--timeout", "TALLY_SECRET",
        "`ps`", "Exit status", "  3  cannot connect", "demo-pos-secret", "demo-operator-secret",
        "tools/quickstart run"})
    EXPECT_TRUE(has(r.out, part)) << part;
  CliRun h = run_tally({"help", "earn"}, {});
  EXPECT_EQ(h.status, 0);
  EXPECT_TRUE(has(h.out, "earn ACCOUNT AMOUNT --order ID")) << h.out;
  EXPECT_FALSE(has(h.out, "redeem ACCOUNT")) << "only earn's help";
  CliRun same = run_tally({"earn", "--help"}, {});
  EXPECT_EQ(same.status, 0);
  EXPECT_EQ(same.out, h.out);
  EXPECT_EQ(run_tally({"help", "frobnicate"}, {}).status, 2);
}

// A cashback program: the balance is money in the program's currency, and tally says so (the
// session info tells the unit and currency); JSON keeps the integers, in minor units.
TEST(CliCashbackTest, ACashbackProgramsAmountsReadAsMoney) {
  tally::testing::TempDir dir("tally-cli-cashback");
  tally::testing::StackOptions o;
  o.keys = {tally::testing::test_key(kPosKey, kProgram, Role::kPos)};
  Program p = default_program();
  p.unit = Unit::kCashback;
  p.earn_points = 5;  // 5% back: 5 cents per 100
  p.earn_per_minor = 100;
  p.signup_bonus_points = 0;
  p.tier_count = 1;
  o.programs = {p};
  tally::testing::ServerStack stack(dir.sub("data"), std::move(o));
  auto cli = [&](std::vector<std::string> args) {
    std::vector<std::string> all = {"--port", std::to_string(stack.server->port()), "--key", std::to_string(kPosKey),
                                    "--secret", kPosSecret, "--timeout", "20000"};
    all.insert(all.end(), args.begin(), args.end());
    return run_tally(all, {});
  };
  ASSERT_EQ(cli({"enroll", "5"}).status, 0);
  CliRun r = cli({"earn", "5", "23.40", "--order", "cb-1"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "+1.17 EUR cashback")) << "5% of 23.40 EUR: " << r.out;
  r = cli({"statement", "5"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "account 5: 1.17 EUR available")) << r.out;
  r = cli({"--json", "balance", "5"});
  EXPECT_EQ(json_int(r.out, "available"), 117) << r.out;
}
