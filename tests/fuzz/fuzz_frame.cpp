// libFuzzer target: the frame reader and every record decoder of the wire protocol, on hostile
// bytes, in both directions. Most random inputs fail a checksum, which would leave the record
// decoders unexplored, so each input is also tried "sealed": its first bytes become a header with
// valid magic, version and checksums for the rest as body. Decoding must never crash, read out
// of bounds or hit undefined behaviour (ASan + UBSan); a record that decodes must encode back to
// the same bytes; a stream split at any point must give the same frames as whole.
#include <cstdint>
#include <cstring>
#include <vector>

#include "net/protocol.h"
#include "net/scram.h"

using namespace tally;
using namespace tally::net;

namespace {

void check_records(const FrameHeader& h, std::span<const uint8_t> body) {
  switch (h.type) {
    case MsgType::kEvents:
      for (uint32_t i = 0; i < h.record_count; ++i) {
        const uint8_t* p = body.data() + size_t{i} * kEventRecordBytes;
        Event e;
        if (!decode_event(p, &e)) continue;
        uint8_t again[kEventRecordBytes];
        encode_event(again, e);
        if (std::memcmp(again, p, kEventRecordBytes) != 0) __builtin_trap();
      }
      break;
    case MsgType::kResults:
      for (uint32_t i = 0; i < h.record_count; ++i) {
        const uint8_t* p = body.data() + size_t{i} * kResultRecordBytes;
        WireResult r;
        if (!decode_result(p, &r)) continue;
        uint8_t again[kResultRecordBytes];
        encode_result(again, r);
        if (std::memcmp(again, p, kResultRecordBytes) != 0) __builtin_trap();
      }
      break;
    case MsgType::kEntries:
      for (uint32_t i = 0; i < h.record_count; ++i) {
        HistoryEntry e;
        (void)decode_entry(body.data() + size_t{i} * kEntryRecordBytes, &e);
      }
      break;
    case MsgType::kHistory:
    case MsgType::kLookup: {
      Query q;
      (void)decode_history_query(body.data(), &q);
      (void)decode_lookup_query(body.data(), &q);
      break;
    }
    case MsgType::kAuthStart: {
      scram::ServerExchange ex;
      (void)ex.client_first(std::string_view(reinterpret_cast<const char*>(body.data()), body.size()));
      break;
    }
    case MsgType::kAuthOk: {
      SessionInfo s;
      (void)decode_session_info(body.data(), &s);
      break;
    }
    case MsgType::kError: {
      ErrorCode c;
      std::string m;
      (void)decode_error(body, &c, &m);
      break;
    }
    default:
      break;
  }
}

// All frames of `bytes` fed at once, then fed in two pieces split at `cut`: the same frames.
void read_all(std::span<const uint8_t> bytes, size_t cut, FrameReader::Check check) {
  std::vector<uint64_t> whole, split;
  FrameLimits limits{1u << 20, 4096};
  {
    FrameReader r(check, limits);
    r.feed(bytes);
    FrameHeader h;
    std::span<const uint8_t> body;
    while (r.next(&h, &body) == FrameReader::Status::kFrame) {
      check_records(h, body);
      whole.push_back(h.request_id);
    }
  }
  FrameReader r(check, limits);
  FrameHeader h;
  std::span<const uint8_t> body;
  r.feed(bytes.first(cut));
  while (r.next(&h, &body) == FrameReader::Status::kFrame) split.push_back(h.request_id);
  r.feed(bytes.subspan(cut));
  while (r.next(&h, &body) == FrameReader::Status::kFrame) split.push_back(h.request_id);
  if (whole != split) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  size_t cut = size == 0 ? 0 : data[0] % (size + 1);
  read_all(in, cut, check_client_frame);
  read_all(in, cut, check_server_frame);
  if (size < 3) return 0;
  // Sealed: a valid header of the type the input's first byte names, its record count derived
  // from the body length, then the rest of the input as body.
  static constexpr MsgType kTypes[] = {MsgType::kAuthStart, MsgType::kAuthChallenge, MsgType::kAuthFinish,
                                       MsgType::kAuthOk,    MsgType::kEvents,        MsgType::kResults,
                                       MsgType::kHistory,   MsgType::kLookup,        MsgType::kEntries,
                                       MsgType::kPing,      MsgType::kPong,          MsgType::kError};
  MsgType type = kTypes[data[1] % (sizeof kTypes / sizeof kTypes[0])];
  std::span<const uint8_t> body = in.subspan(2);
  size_t rec = type == MsgType::kEvents    ? kEventRecordBytes
               : type == MsgType::kResults ? kResultRecordBytes
               : type == MsgType::kEntries ? kEntryRecordBytes
               : type == MsgType::kHistory || type == MsgType::kLookup ? kQueryRecordBytes
                                                                       : 0;
  uint32_t count = rec == 0 ? 0 : static_cast<uint32_t>(body.size() / rec);
  if (rec != 0) body = body.first(count * rec);
  std::vector<uint8_t> sealed;
  append_frame(sealed, type, 7, body, count);
  read_all(sealed, cut % (sealed.size() + 1), check_client_frame);
  read_all(sealed, cut % (sealed.size() + 1), check_server_frame);
  return 0;
}
