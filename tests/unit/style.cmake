# style_clang_format: every tracked C/C++ file is formatted by the repository's .clang-format
# (100 columns). Fix with: git ls-files '*.cc' '*.h' '*.c' | xargs clang-format -i
add_test(NAME style_clang_format
  COMMAND sh -c "git ls-files '*.cc' '*.h' '*.c' | grep -v '^tests/fuzz/corpus/' | xargs clang-format --dry-run --Werror"
  WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(style_clang_format PROPERTIES LABELS unit TIMEOUT 300)
