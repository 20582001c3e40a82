// NVTX ranges as a tool sees them: a subprocess runs nvtx_workload with the capture library
// injected (NVTX_INJECTION64_PATH), and this test reads what the library recorded.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace {

std::vector<std::string> run_captured() {
  std::string out = ::testing::TempDir() + "nvtx_capture_" + std::to_string(::getpid()) + ".txt";
  std::remove(out.c_str());
  std::string cmd = "NVTX_INJECTION64_PATH=" + std::string(NVTX_CAPTURE_LIB) +
                    " EFFMETRICS_NVTX_CAPTURE=" + out + " " + std::string(NVTX_WORKLOAD) +
                    " > /dev/null";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::vector<std::string> lines;
  std::ifstream in(out);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::remove(out.c_str());
  return lines;
}

}  // namespace

TEST(Nvtx, ModuleAndOpRangesReachTheTool) {
  std::vector<std::string> lines = run_captured();
  ASSERT_FALSE(lines.empty()) << "the injection library recorded nothing";
  EXPECT_EQ(lines[0], "push encoder");
  EXPECT_EQ(lines[1], "push encoder.layer");
  EXPECT_EQ(lines[2], "push aten::mm [4, 4] [4, 4]");  // the op with its input shapes
  EXPECT_EQ(lines[3], "pop");                          // aten::mm
  EXPECT_EQ(lines[4], "pop");                          // encoder.layer
  EXPECT_EQ(lines[5], "pop");                          // encoder
  EXPECT_EQ(lines[6], "push block");
  EXPECT_EQ(lines[7], "push aten::mm [4, 4] [3, 5]");
  for (const std::string& l : lines) EXPECT_NE(l, "push after_stop");
}

TEST(Nvtx, RangesBalancedWhenAnOpThrows) {
  std::vector<std::string> lines = run_captured();
  int depth = 0, max_depth = 0;
  for (const std::string& l : lines) {
    depth += l.rfind("push", 0) == 0 ? 1 : -1;
    ASSERT_GE(depth, 0) << "pop without push";
    max_depth = std::max(max_depth, depth);
  }
  EXPECT_EQ(depth, 0) << "unbalanced ranges";
  EXPECT_EQ(max_depth, 3);
  EXPECT_EQ(lines.size(), 6u + 4u);  // 3 push/pop pairs, then block and its failed mm
}
