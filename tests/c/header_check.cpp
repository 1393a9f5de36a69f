// The public header compiles cleanly as C++17 (-Wall -Wextra -Wpedantic -Werror), survives double
// inclusion, and declares its functions extern "C" (this file links against the library and runs).
// Built and run by tests/c_api.rs.

// Deprecated aliases get the compiler attribute: it must compile cleanly too.
#define SB_WARN_DEPRECATED
#include "specblock.h"
#include "specblock.h"  // include guard

#include <cstddef>
#include <cstring>
#include <memory>
#include <type_traits>

static_assert(SB_STATUS_OK == 0, "SB_STATUS_OK is 0");
static_assert(SB_MAX_KEEP == SB_MAX_DEPTH + 1, "keep list holds the root plus SB_MAX_DEPTH nodes");
static_assert(sizeof(sb_tree_params) == 12, "sb_tree_params: three uint32_t");
static_assert(sizeof(sb_sampling) == 16, "sb_sampling");
static_assert(sizeof(sb_node_meta) == 4, "sb_node_meta");
static_assert(std::is_trivially_copyable<sb_accept>::value, "sb_accept is plain data");
static_assert(sizeof(sb_adapter_params) == 56, "sb_adapter_params");
static_assert(sizeof(sb_adapter_stats) == 112, "sb_adapter_stats");
static_assert(std::is_same<decltype(sb_adapter_new(nullptr, nullptr, nullptr)), sb_status>::value,
              "sb_adapter_new returns sb_status");
static_assert(std::is_same<decltype(sb_tree_len(nullptr)), uint32_t>::value, "sb_tree_len returns uint32_t");
static_assert(std::is_same<decltype(sb_status_str(0)), const char *>::value, "sb_status_str");

namespace {
struct TreeDeleter {
    void operator()(sb_tree *t) const noexcept { sb_tree_free(t); }
};
using TreePtr = std::unique_ptr<sb_tree, TreeDeleter>;
}  // namespace

int main() {
    sb_tree_params params = sb_tree_default_params();
    sb_tree *raw = nullptr;
    if (sb_tree_new(&params, &raw) != SB_STATUS_OK) return 1;
    TreePtr tree(raw);
    sb_node_meta meta{1, 2, 3, 4};
    int32_t id = -1;
    if (sb_tree_reset(tree.get(), 1) != SB_STATUS_OK) return 1;
    if (sb_tree_add_meta(tree.get(), 0, 5, -0.1f, meta, &id) != SB_STATUS_OK || id != 1) return 1;
    if (sb_tree_finalize(tree.get(), 1) != SB_STATUS_OK) return 1;
    sb_node_meta out[2]{};
    if (sb_tree_node_meta(tree.get(), out, 2) != SB_STATUS_OK || out[1].user != 4) return 1;
    sb_sampling s = sb_sampling_default_params();
    if (s.struct_size != sizeof(sb_sampling)) return 1;
    sb_adapter_params ap = sb_adapter_default_params();
    if (ap.struct_size != sizeof(sb_adapter_params) || ap.mode != SB_ADAPT_BANDIT) return 1;
    if (sb_session_detach_adapter(nullptr) != SB_STATUS_NULL_ARGUMENT) return 1;
    return std::strcmp(sb_version(), SB_VERSION) == 0 ? 0 : 1;
}
