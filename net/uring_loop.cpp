// The io_uring back end (liburing). Being written: until then it reports itself unavailable and
// the server runs on Boost.Asio, loudly.
#include "net/backend.h"

#include <stdexcept>

namespace tally::net {

bool uring_available(std::string* why_not) {
  *why_not = "the io_uring back end is not built yet";
  return false;
}

std::unique_ptr<Loop> make_uring_loop(ServerCore&, Worker&, int) {
  throw std::runtime_error("the io_uring back end is not built yet");
}

}  // namespace tally::net
