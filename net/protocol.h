// Tally net: the binary wire protocol (docs/protocol.md is the contract; this header pins it).
//
// Every message is a frame: a 48-byte little-endian header, then a body of `body_bytes`. Both carry
// an XXH3-64 checksum. Bodies are arrays of fixed-size records (events, results, history entries)
// or, during the handshake, SCRAM text. Encoding is explicit little-endian byte by byte; no struct
// is ever copied onto the wire as it lies in memory.
//
// Everything here is pure: no sockets, no threads, no allocation except into the caller's
// vectors. Any thread may call any function. FrameReader belongs to one connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/history_entry.h"
#include "engine/service.h"  // ProgramStats, LogSummary
#include "engine/types.h"

namespace tally::net {

constexpr uint32_t kMagic = 0x50594C54;  // the bytes "TLYP"
constexpr uint8_t kProtocolVersion = 1;

constexpr size_t kHeaderBytes = 48;
constexpr size_t kEventRecordBytes = 96;
constexpr size_t kResultRecordBytes = 72;
constexpr size_t kEntryRecordBytes = 128;
constexpr size_t kQueryRecordBytes = 32;
constexpr size_t kStatsRecordBytes = 160;
constexpr size_t kStatementRecordBytes = 72;
constexpr size_t kLotRecordBytes = 16;
constexpr uint32_t kLotsPerStatementMax = 4096;  // more are cut (the statement says so)
constexpr size_t kAuthOkInfoBytes = 16;
constexpr size_t kErrorFixedBytes = 8;
constexpr size_t kSubscribeRecordBytes = 96;
constexpr size_t kSubscribedRecordBytes = 48;
constexpr size_t kAckRecordBytes = 16;
constexpr size_t kLogBatchesPrefixBytes = 16;
constexpr size_t kConsumerNameBytesMax = 64;

// Hard ceilings of the protocol itself; a server configures lower limits (ServerLimits).
constexpr uint32_t kBodyBytesLimit = 64u << 20;
constexpr uint32_t kAuthBodyBytesMax = 4096;     // SCRAM messages
constexpr uint32_t kPingBodyBytesMax = 1024;
constexpr uint32_t kEntriesPerReplyMax = 10'000;  // history page / lookup reply
constexpr uint32_t kErrorMessageBytesMax = 1024;
constexpr uint32_t kInfoBytesMax = 1024;

enum class MsgType : uint8_t {
  kAuthStart = 0x01,      // client: SCRAM client-first-message
  kAuthChallenge = 0x02,  // server: SCRAM server-first-message
  kAuthFinish = 0x03,     // client: SCRAM client-final-message
  kAuthOk = 0x04,         // server: session info record, then SCRAM server-final-message
  kEvents = 0x10,         // client: event records
  kResults = 0x11,        // server: one result record per event of the request, same order
  kHistory = 0x12,        // client: one query record (a member's statement page)
  kLookup = 0x13,         // client: one query record (what happened to a reference)
  kEntries = 0x14,        // server: history entry records answering kHistory or kLookup
  kStats = 0x15,          // client: empty body (the key's program)
  kStatsReply = 0x16,     // server: one stats record
  kInfo = 0x17,           // client: empty body
  kInfoReply = 0x18,      // server: text, "key=value" lines (role, epoch, primary, durable_lsn)
  kStatement = 0x19,      // client: one statement query record (a member's lots)
  kStatementReply = 0x1A, // server: one statement record, then record_count lot records
  kPing = 0x20,           // either side: body echoed in the kPong
  kPong = 0x21,
  kSubscribe = 0x30,      // client: one subscribe record; the connection becomes a stream
  kSubscribed = 0x31,     // server: one subscribed record (status, where the stream starts)
  kLogBatches = 0x32,     // server: stream prefix, then log batches (record_count of them)
  kAck = 0x33,            // client: one ack record (a named consumer's cursor)
  // 0x34-0x3F: reserved for replication.
  kError = 0x7F,          // server: why the connection is being closed
};
std::string_view to_string(MsgType t);

// Why the server closes a connection (the kError body). Values are stable.
enum class ErrorCode : uint16_t {
  kNone = 0,
  kBadMagic = 1,
  kUnsupportedVersion = 2,
  kBadHeaderChecksum = 3,
  kBadBodyChecksum = 4,
  kFrameTooLarge = 5,       // body_bytes over the server's limit for that message type
  kBadRecordCount = 6,      // body_bytes != record_count x record size, or a count the type forbids
  kTooManyRecords = 7,      // more events (or a larger page) than the server allows per frame
  kUnknownType = 8,
  kUnexpectedMessage = 9,   // a valid type at the wrong moment (events before authentication, ...)
  kBadRecord = 10,          // a reserved field not zero, an unknown role, bad SCRAM text
  kAuthFailed = 11,
  kForbidden = 12,          // a query outside the key's program or role
  kTimeout = 13,            // handshake, idle or frame-completion timeout
  kShuttingDown = 14,
  kTooManyConnections = 15,
  kStorageFailed = 16,      // the durable log failed; nothing more is acknowledged
  kBadFlags = 17,
  kTruncated = 18,          // the stream ended inside a frame
  kTooManyFailures = 19,    // too many failed handshakes from this address: try later
  kBusy = 20,               // the server is over its memory budget
  kTrimmed = 21,            // a subscriber's next LSN was trimmed from the log
};
constexpr uint16_t kErrorCodeCount = 22;
std::string_view to_string(ErrorCode c);

// Roles of an API key (docs/protocol.md, "Roles"): what its events and queries may do.
// kReplica: subscribes to the whole log, every program, as stored (followers, warehouse loaders);
// sends no events.
enum class Role : uint8_t { kPos = 1, kOperator = 2, kReader = 3, kReplica = 4 };
std::string_view to_string(Role r);
// True when a key of `role` may send an event of `kind` (client kinds only).
bool role_allows(Role role, EventKind kind);

struct FrameHeader {
  uint8_t version = kProtocolVersion;
  MsgType type = MsgType::kPing;
  uint16_t flags = 0;  // none defined in version 1: must be 0
  uint64_t request_id = 0;
  uint32_t body_bytes = 0;
  uint32_t record_count = 0;
  uint64_t body_hash = 0;
};

uint64_t body_hash(std::span<const uint8_t> body);
// Writes the 48 header bytes, header checksum included.
void encode_header(uint8_t* out, const FrameHeader& h);
// Checks magic, version, header checksum and flags, in that order; fills *h on kNone.
[[nodiscard]] ErrorCode decode_header(const uint8_t* in, FrameHeader* h);
// Appends a whole frame (header with both checksums, then `body`) to `out`.
void append_frame(std::vector<uint8_t>& out, MsgType type, uint64_t request_id,
                  std::span<const uint8_t> body, uint32_t record_count);

// What a peer may send, per direction, and the limits it is held to.
struct FrameLimits {
  uint32_t body_bytes_max = 4u << 20;
  uint32_t events_per_frame_max = 16384;
};
// Checks a decoded header against the message's shape (record size and count, body size for its
// type) before the body is read. Server side: only client message types pass.
[[nodiscard]] ErrorCode check_client_frame(const FrameHeader& h, const FrameLimits& limits);
[[nodiscard]] ErrorCode check_server_frame(const FrameHeader& h, const FrameLimits& limits = {});

// ---- Records --------------------------------------------------------------------------------
// An event as a client sends it. key_id and tag are not on the wire (the server sets them);
// reserved bytes must be zero: decode_event refuses the record otherwise.
void encode_event(uint8_t* out, const Event& e);
[[nodiscard]] bool decode_event(const uint8_t* in, Event* e);

// What a client gets back per event.
struct WireResult {
  Result result = Result::kOk;
  uint8_t flags = 0;  // effect flags: replay, claimed, capped, bounced, no account
  uint8_t tier = 0;
  uint16_t shard = 0;
  uint64_t seq = 0;   // the shard's sequence number of the effect (0: decided by the server)
  int64_t points = 0;
  int64_t available = 0;
  int64_t held = 0;
  int64_t lifetime_earned = 0;
  int64_t lifetime_redeemed = 0;
  int64_t qualifying = 0;
  int64_t time_ms = 0;  // server time the event was stamped with (0: decided by the server)
  friend bool operator==(const WireResult&, const WireResult&) = default;
};
WireResult wire_result(const Effect& f);
WireResult wire_result(Result r);  // decided by the network layer (forbidden, busy, ...)
void encode_result(uint8_t* out, const WireResult& r);
// False for a result code outside the enum or non-zero reserved bytes.
[[nodiscard]] bool decode_result(const uint8_t* in, WireResult* r);

void encode_entry(uint8_t* out, const HistoryEntry& e);
[[nodiscard]] bool decode_entry(const uint8_t* in, HistoryEntry* e);

// kHistory: a page of a member's statement, newest first, strictly before `before`
// ({UINT64_MAX, UINT32_MAX}: from the newest). kLookup: every effect of `ref` in `program`.
struct Query {
  uint32_t program = 0;  // 0: the key's program
  uint32_t limit = 0;    // kHistory: entries at most (1..kEntriesPerReplyMax); kLookup: 0
  uint64_t account = 0;  // kHistory
  LogPos before{UINT64_MAX, UINT32_MAX};  // kHistory
  Ref128 ref;            // kLookup
};
// kStatsReply: the key's program's totals and what the log has done (docs/protocol.md, "Stats
// record").
struct StatsRecord {
  ProgramStats program;
  LogSummary log;
};
void encode_stats(uint8_t* out, const StatsRecord& s);
void decode_stats(const uint8_t* in, StatsRecord* s);

// kStatement and kStatementReply (docs/protocol.md, "Statement").
struct StatementReply {
  Result result = Result::kOk;  // kOk, kProgramNotFound, kAccountNotFound
  bool truncated = false;       // more lots than kLotsPerStatementMax: the latest are cut
  Statement statement;
};
void encode_statement_query(uint8_t* out, uint32_t program, uint64_t account);
[[nodiscard]] bool decode_statement_query(const uint8_t* in, uint32_t* program, uint64_t* account);
// The reply's body (statement record and lot records) and its record count.
std::vector<uint8_t> encode_statement(const StatementReply& r, uint32_t* records);
[[nodiscard]] bool decode_statement(std::span<const uint8_t> body, uint32_t records, StatementReply* r);

void encode_history_query(uint8_t* out, const Query& q);
void encode_lookup_query(uint8_t* out, const Query& q);
[[nodiscard]] bool decode_history_query(const uint8_t* in, Query* q);
[[nodiscard]] bool decode_lookup_query(const uint8_t* in, Query* q);

// ---- The change stream (docs/protocol.md, "Subscribe") --------------------------------------
constexpr uint32_t kSubscribeResume = 1;  // start after the named consumer's cursor, when it has one
// A follower: its acks (sent after its own fsync) count for semi-synchronous acknowledgement.
// Needs a replica key and a name.
constexpr uint32_t kSubscribeSync = 2;
struct SubscribeRequest {
  uint64_t from_lsn = 1;       // the first LSN wanted (0: the oldest the log holds)
  uint32_t flags = 0;          // kSubscribeResume
  uint32_t frame_bytes = 0;    // batches per kLogBatches frame up to about this (0: the server's default)
  std::string name;            // a named consumer (durable cursor); empty: none
};
// Consumer names: 1..64 of [A-Za-z0-9._-].
bool valid_consumer_name(std::string_view name);
void encode_subscribe(uint8_t* out, const SubscribeRequest& r);
[[nodiscard]] bool decode_subscribe(const uint8_t* in, SubscribeRequest* r);

enum class SubscribeStatus : uint8_t {
  kOk = 0,
  kTrimmed = 1,     // from_lsn is older than the oldest LSN the log holds (oldest_lsn says which)
  kAhead = 2,       // from_lsn is past durable_lsn + 1
  kNameInUse = 3,   // another connection is subscribed under this consumer name
  kForbidden = 4,   // the key's role may not subscribe (pos)
  kBadName = 5,
};
std::string_view to_string(SubscribeStatus s);
struct SubscribeReply {
  SubscribeStatus status = SubscribeStatus::kOk;
  bool filtered = false;       // batches carry only the key's program's records
  uint64_t start_lsn = 0;      // the first LSN the stream sends
  uint64_t oldest_lsn = 0;     // the oldest LSN the log holds
  uint64_t durable_lsn = 0;
  uint64_t cursor = 0;         // the named consumer's cursor (0: none)
  uint64_t epoch = 0;
};
void encode_subscribed(uint8_t* out, const SubscribeReply& r);
[[nodiscard]] bool decode_subscribed(const uint8_t* in, SubscribeReply* r);

// kLogBatches body: this prefix, then record_count times (u32 length, batch bytes). A frame with
// no batches is a heartbeat (sent when nothing else was for a second).
struct StreamPrefix {
  uint64_t durable_lsn = 0;
  int64_t server_time_ms = 0;
};
void encode_stream_prefix(uint8_t* out, const StreamPrefix& p);
void decode_stream_prefix(const uint8_t* in, StreamPrefix* p);
// Splits a kLogBatches body into its batches (views into `body`); false if the lengths do not add
// up to the body or the count differs from `count`.
[[nodiscard]] bool split_log_batches(std::span<const uint8_t> body, uint32_t count, StreamPrefix* prefix,
                                     std::vector<std::span<const uint8_t>>* batches);

// kAck: the named consumer has everything through `lsn`; the server keeps it as its cursor.
void encode_ack(uint8_t* out, uint64_t lsn);
[[nodiscard]] bool decode_ack(const uint8_t* in, uint64_t* lsn);

// kAuthOk's fixed part: who the server says you are, and its per-frame limit.
struct SessionInfo {
  uint32_t key_id = 0;
  uint32_t program = 0;
  Role role = Role::kReader;
  uint32_t events_per_frame_max = 0;
  Unit unit = Unit::kPoints;  // what the program's balances count (cashback: money in `currency`)
  uint16_t currency = 0;      // the program's ISO 4217 numeric currency; 0: not known to the server
};
void encode_session_info(uint8_t* out, const SessionInfo& s);
[[nodiscard]] bool decode_session_info(const uint8_t* in, SessionInfo* s);

// kError body: code, then a human-readable message (at most kErrorMessageBytesMax bytes).
std::vector<uint8_t> error_body(ErrorCode code, std::string_view message);
[[nodiscard]] bool decode_error(std::span<const uint8_t> body, ErrorCode* code, std::string* message);

// ---- Streaming -------------------------------------------------------------------------------
// Splits a byte stream into frames. Feed it what the socket delivered; take frames until it says
// kNeedMore. Checks header and body checksums and, through `check`, the frame's shape before its
// body is buffered, so an oversized frame is refused without reading it.
class FrameReader {
 public:
  enum class Status : uint8_t { kNeedMore, kFrame, kError };
  using Check = ErrorCode (*)(const FrameHeader&, const FrameLimits&);

  FrameReader(Check check, FrameLimits limits) : check_(check), limits_(limits) {}

  // Bytes received. The reader keeps what it has not yet returned as frames.
  void feed(std::span<const uint8_t> bytes);
  // Limits for the frames not yet checked (a server lifts them once a client authenticated).
  void set_limits(FrameLimits limits) { limits_ = limits; }
  // The next frame: *h and *body (valid until the next call of next() or feed()).
  Status next(FrameHeader* h, std::span<const uint8_t>* body);
  // Once next() said kError: why, and the request id of the offending header when it was readable.
  ErrorCode error() const { return error_; }
  uint64_t error_request_id() const { return error_request_id_; }
  // Bytes received and not yet returned as whole frames.
  size_t buffered_bytes() const { return buf_.size() - consumed_; }
  // True when next() can answer without more bytes: a whole frame (or a bad header) is buffered.
  bool frame_ready() const;
  // True when a frame has begun but not finished (the stream must not end here).
  bool mid_frame() const { return buffered_bytes() > 0; }

 private:
  Check check_;
  FrameLimits limits_;
  std::vector<uint8_t> buf_;
  size_t consumed_ = 0;  // bytes of buf_ already returned
  ErrorCode error_ = ErrorCode::kNone;
  uint64_t error_request_id_ = 0;
};

}  // namespace tally::net
