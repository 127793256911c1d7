// Tally: a log-linear histogram of non-negative values (latencies in ns, batch sizes).
//
// Values below 16 have a bucket each; above, each power of two is split into 16 linear
// sub-buckets, so a reported percentile is within 1/16 (6.25%) of the true value. Fixed memory
// (~8 KiB), no allocation after construction, O(1) record. Not thread-safe: one writer, or merge()
// copies taken under the owner's own synchronisation.
#pragma once

#include <array>
#include <cstdint>

namespace tally {

class LogHistogram {
 public:
  static constexpr int kSubBits = 4;
  static constexpr int kSub = 1 << kSubBits;
  static constexpr int kBuckets = (64 - kSubBits + 1) * kSub;

  void record(uint64_t v) {
    ++counts_[bucket_of(v)];
    ++count_;
    sum_ += v;
    if (v > max_) max_ = v;
    if (count_ == 1 || v < min_) min_ = v;
  }

  void merge(const LogHistogram& o) {
    for (int i = 0; i < kBuckets; ++i) counts_[i] += o.counts_[i];
    if (o.count_ != 0 && (count_ == 0 || o.min_ < min_)) min_ = o.min_;
    if (o.max_ > max_) max_ = o.max_;
    count_ += o.count_;
    sum_ += o.sum_;
  }

  // The value at quantile q in [0, 1]: the upper bound of the bucket holding it, capped by max.
  uint64_t quantile(double q) const {
    if (count_ == 0) return 0;
    uint64_t rank = static_cast<uint64_t>(q * static_cast<double>(count_ - 1)) + 1;
    uint64_t seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) {
        uint64_t hi = upper_of(i);
        return hi < max_ ? hi : max_;
      }
    }
    return max_;
  }

  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }
  uint64_t min() const { return min_; }
  double mean() const { return count_ == 0 ? 0.0 : static_cast<double>(sum_) / static_cast<double>(count_); }

  static int bucket_of(uint64_t v) {
    if (v < kSub) return static_cast<int>(v);
    int msb = 63 - __builtin_clzll(v);  // >= kSubBits
    int shift = msb - kSubBits;
    int sub = static_cast<int>((v >> shift) & (kSub - 1));
    return (shift + 1) * kSub + sub;
  }
  // The largest value that falls into bucket i.
  static uint64_t upper_of(int i) {
    if (i < kSub) return static_cast<uint64_t>(i);
    int shift = i / kSub - 1;
    uint64_t sub = static_cast<uint64_t>(i % kSub);
    uint64_t lo = (uint64_t{kSub} + sub) << shift;
    return lo + ((uint64_t{1} << shift) - 1);
  }

 private:
  std::array<uint64_t, kBuckets> counts_{};
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t min_ = 0;
  uint64_t max_ = 0;
};

}  // namespace tally
