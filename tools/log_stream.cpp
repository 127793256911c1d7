#include "tools/log_stream.h"

#include <chrono>

namespace tally {

namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

net::ClientError stream_error(net::ClientError::Kind k, std::string m) {
  net::ClientError e;
  e.kind = k;
  e.message = std::move(m);
  return e;
}

}  // namespace

net::ClientError LogStream::open(const LogStreamOptions& options) {
  options_ = options;
  close();
  net::ClientError e;
  conn_ = net::Connection::open(options.client, &e);
  if (e) return e;
  uint64_t id = 0;
  if ((e = conn_->send_subscribe(options.request, &id))) return e;
  net::Reply r;
  if ((e = conn_->receive(&r, options.client.request_timeout_ms))) return e;
  if (r.type != net::MsgType::kSubscribed)
    return stream_error(net::ClientError::Kind::kProtocol, "expected subscribed, got " + std::string(net::to_string(r.type)));
  reply_ = r.subscribed;
  if (reply_.status != net::SubscribeStatus::kOk) {
    std::string m = "subscribe refused: " + std::string(net::to_string(reply_.status));
    if (reply_.status == net::SubscribeStatus::kTrimmed)
      m += ": LSN " + std::to_string(reply_.start_lsn) + " was trimmed; the oldest the log holds is " +
           std::to_string(reply_.oldest_lsn);
    if (reply_.status == net::SubscribeStatus::kAhead)
      m += ": LSN " + std::to_string(reply_.start_lsn) + " is past the log's end (" + std::to_string(reply_.durable_lsn) + ")";
    close();
    return stream_error(net::ClientError::Kind::kServer, m);
  }
  next_lsn_ = reply_.start_lsn;
  expect_prev_ = options.prev_hash;
  prefix_ = {reply_.durable_lsn, 0};
  last_frame_ms_ = now_ms();
  return {};
}

net::ClientError LogStream::next(StreamBatch* out, int64_t timeout_ms, bool* got) {
  *got = false;
  if (!conn_) return stream_error(net::ClientError::Kind::kClosed, "not subscribed");
  int64_t deadline = now_ms() + timeout_ms;
  while (pending_at_ >= pending_.size()) {
    int64_t left = deadline - now_ms();
    if (left <= 0) {
      if (now_ms() - last_frame_ms_ > options_.silence_timeout_ms) {
        close();
        return stream_error(net::ClientError::Kind::kTimeout, "no frame from the server for " +
                                                                 std::to_string(options_.silence_timeout_ms) + " ms");
      }
      return {};
    }
    net::ClientError e = conn_->receive(&frame_, left);
    if (e.kind == net::ClientError::Kind::kTimeout) continue;  // re-checks the deadline and the silence
    if (e) {
      close();
      return e;
    }
    last_frame_ms_ = now_ms();
    if (frame_.type == net::MsgType::kPong) continue;
    if (frame_.type != net::MsgType::kLogBatches) {
      close();  // the stream can no longer be followed on this connection
      return stream_error(net::ClientError::Kind::kProtocol, "unexpected " + std::string(net::to_string(frame_.type)) + " in the stream");
    }
    if (!net::split_log_batches(frame_.body, frame_.batch_count, &prefix_, &pending_)) {
      close();
      return stream_error(net::ClientError::Kind::kProtocol, "malformed log_batches frame");
    }
    pending_at_ = 0;
  }
  std::span<const uint8_t> b = pending_[pending_at_++];
  out->records.clear();
  storage::DecodeError d = storage::decode_stream_batch(b, &out->header, &out->records);
  auto bad = [&](const std::string& why) {
    close();
    return stream_error(net::ClientError::Kind::kProtocol, "stream: batch at LSN " + std::to_string(next_lsn_) + ": " + why);
  };
  if (d != storage::DecodeError::kOk) return bad(std::string(storage::to_string(d)));
  if (out->header.lsn != next_lsn_) return bad("the server sent LSN " + std::to_string(out->header.lsn) + " (a gap)");
  if (expect_prev_ && out->header.prev_hash != *expect_prev_)
    return bad("its previous-batch hash does not match the batch before it (the chain is broken)");
  out->bytes.assign(b.begin(), b.end());
  expect_prev_ = out->header.hash;
  last_hash_ = out->header.hash;
  ++next_lsn_;
  *got = true;
  return {};
}

net::ClientError LogStream::ack(uint64_t lsn) {
  if (!conn_) return stream_error(net::ClientError::Kind::kClosed, "not subscribed");
  return conn_->send_ack(lsn);
}

void LogStream::close() {
  if (conn_) conn_->close();
  conn_.reset();
  pending_.clear();
  pending_at_ = 0;
}

}  // namespace tally
