// SPDX-License-Identifier: Apache-2.0
// Standalone driver for the fuzz targets when they are built without libFuzzer (g++, or clang
// without -fsanitize=fuzzer): replays corpus files and directories, then runs a bounded number
// of structured mutations of them. Deterministic for a given --seed, so a CI failure can be
// reproduced exactly; a failing input is written to ./crash-<target>-<run>.bin.
//
//   ./fuzz_wire    [--runs N] [--seed S] [--max-len L] [corpus dir or file]...
//   ./fuzz_kernels [--runs N] [--seed S] [--sweep] [--misaligned] [corpus dir or file]...
#include <dirent.h>
#include <sys/stat.h>

#include <sanitizer/common_interface_defs.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "harness.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
// Provided by fuzz_kernels.cpp only (weak: absent from the wire target).
extern "C" void harness_sweep(void (*progress)(const char*)) __attribute__((weak));
extern std::size_t harness_misalign __attribute__((weak));

namespace {

using Bytes = std::vector<std::uint8_t>;

std::string g_target = "target";

bool read_file(const std::string& path, Bytes& out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  out.clear();
  std::uint8_t buf[4096];
  std::size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + got);
  std::fclose(f);
  return true;
}

void collect(const std::string& path, std::vector<std::string>& files) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    std::fprintf(stderr, "no such corpus path: %s\n", path.c_str());
    std::exit(2);
  }
  if (!S_ISDIR(st.st_mode)) {
    files.push_back(path);
    return;
  }
  DIR* d = opendir(path.c_str());
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    names.push_back(path + "/" + e->d_name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  for (auto& n : names) collect(n, files);
}

const Bytes* g_input = nullptr;
std::string g_tag;

/// Write the input being run to ./crash-<target>-<tag>.bin; called on a sanitizer report
/// (death callback) and on abort or a fatal signal, so the reproducer is on disk.
void dump_current() {
  if (g_input == nullptr) return;
  const std::string name = "crash-" + g_target + "-" + g_tag + ".bin";
  FILE* f = std::fopen(name.c_str(), "wb");
  if (f) {
    if (!g_input->empty()) std::fwrite(g_input->data(), 1, g_input->size(), f);
    std::fclose(f);
    std::fprintf(stderr, "==HARNESS== input written to %s (%zu bytes)\n", name.c_str(),
                 g_input->size());
  }
  g_input = nullptr;
}

void on_signal(int sig) {
  dump_current();
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

void save_and_run(const Bytes& in, const std::string& tag) {
  g_input = &in;
  g_tag = tag;
  // Exact-size heap copy: ASan then reports reads one byte past the input.
  std::unique_ptr<std::uint8_t[]> copy(new std::uint8_t[in.size() + 1]);
  if (!in.empty()) std::memcpy(copy.get(), in.data(), in.size());
  LLVMFuzzerTestOneInput(copy.get(), in.size());
  g_input = nullptr;
}

/// Mutations aimed at length-checked binary formats: bit flips, byte and 64-bit field
/// overwrites with boundary values (the header's D / k / s / bucket fields live at offsets
/// 8, 16, 24), truncation, extension, insertion and deletion.
void mutate(Bytes& b, harness::Rng& rng, std::size_t max_len) {
  static const std::uint64_t interesting64[] = {0,
                                                1,
                                                2,
                                                7,
                                                8,
                                                255,
                                                256,
                                                65535,
                                                65536,
                                                0xFFFFFFFFULL,
                                                0x100000000ULL,
                                                0x7FFFFFFFFFFFFFFFULL,
                                                0x8000000000000000ULL,
                                                0xFFFFFFFFFFFFFFFFULL};
  static const std::uint8_t interesting8[] = {0, 1, 2, 3, 4, 5, 0x7F, 0x80, 0xFE, 0xFF};
  const unsigned count = 1 + static_cast<unsigned>(rng.below(4));
  for (unsigned m = 0; m < count; ++m) {
    const unsigned kind = static_cast<unsigned>(rng.below(9));
    if (b.empty() && kind < 5) {
      b.push_back(static_cast<std::uint8_t>(rng.next()));
      continue;
    }
    switch (kind) {
      case 0:
        b[rng.below(b.size())] ^= static_cast<std::uint8_t>(1U << rng.below(8));
        break;
      case 1:
        b[rng.below(b.size())] = static_cast<std::uint8_t>(rng.next());
        break;
      case 2:
        b[rng.below(b.size())] = interesting8[rng.below(sizeof interesting8)];
        break;
      case 3: {  // a 64-bit field, at a header offset half the time
        std::size_t off = rng.below(2) ? 8 * rng.below(4) : rng.below(b.size());
        std::uint64_t v = interesting64[rng.below(sizeof interesting64 / 8)];
        if (rng.below(3) == 0) v += rng.below(3) - 1;
        for (unsigned i = 0; i < 8 && off + i < b.size(); ++i) b[off + i] = static_cast<std::uint8_t>(v >> (8 * i));
        break;
      }
      case 4:
        b.resize(rng.below(b.size() + 1));
        break;
      case 5: {
        const std::size_t add = 1 + rng.below(rng.below(4) == 0 ? 256 : 8);
        for (std::size_t i = 0; i < add; ++i) b.push_back(static_cast<std::uint8_t>(rng.next()));
        break;
      }
      case 6:
        if (!b.empty()) b.erase(b.begin() + static_cast<std::ptrdiff_t>(rng.below(b.size())));
        break;
      case 7:
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(rng.below(b.size() + 1)),
                 static_cast<std::uint8_t>(rng.next()));
        break;
      default: {  // swap in a run of random bytes
        const std::size_t off = rng.below(b.size());
        const std::size_t len = 1 + rng.below(16);
        for (std::size_t i = off; i < off + len && i < b.size(); ++i) b[i] = static_cast<std::uint8_t>(rng.next());
        break;
      }
    }
  }
  if (b.size() > max_len) b.resize(max_len);
}

void progress(const char* what) {
  std::fprintf(stderr, "  sweep: %s\n", what);
}

}  // namespace

int main(int argc, char** argv) {
  std::string self = argv[0];
  const auto slash = self.rfind('/');
  g_target = slash == std::string::npos ? self : self.substr(slash + 1);
  std::uint64_t runs = 0, seed = 1;
  std::size_t max_len = 4096;
  bool sweep = false;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) runs = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--max-len" && i + 1 < argc) max_len = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--sweep") sweep = true;
    else if (a == "--misaligned") {
      if (&harness_misalign == nullptr) {
        std::fprintf(stderr, "--misaligned applies to fuzz_kernels only\n");
        return 2;
      }
      harness_misalign = 1;
    } else if (a.rfind("--", 0) == 0) {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    } else collect(a, files);
  }
  __sanitizer_set_death_callback(dump_current);
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) std::signal(sig, on_signal);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Bytes> corpus;
  for (const auto& f : files) {
    Bytes b;
    if (!read_file(f, b)) {
      std::fprintf(stderr, "cannot read %s\n", f.c_str());
      return 2;
    }
    corpus.push_back(b);
    save_and_run(b, "replay");
  }
  std::fprintf(stderr, "%s: replayed %zu corpus inputs\n", g_target.c_str(), corpus.size());
  if (sweep) {
    if (harness_sweep == nullptr) {
      std::fprintf(stderr, "--sweep applies to fuzz_kernels only\n");
      return 2;
    }
    harness_sweep(progress);
    std::fprintf(stderr, "%s: sweep done\n", g_target.c_str());
  }
  harness::Rng rng(seed);
  for (std::uint64_t r = 0; r < runs; ++r) {
    Bytes b;
    if (!corpus.empty() && rng.below(8) != 0) {
      b = corpus[rng.below(corpus.size())];
    } else {
      b.resize(rng.below(64));
      for (auto& c : b) c = static_cast<std::uint8_t>(rng.next());
    }
    mutate(b, rng, max_len);
    save_and_run(b, std::to_string(r));
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "%s: %llu mutated runs, seed %llu, %.1f s, no failures\n",
               g_target.c_str(), static_cast<unsigned long long>(runs),
               static_cast<unsigned long long>(seed), secs);
  return 0;
}
