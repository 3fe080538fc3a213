# Sanitized builds (MPK_SANITIZE, scripts/test --sanitize): the suites that make sense there carry
# the label "sanitize" (ctest -L sanitize) and their programs link the sanitizers' defaults
# (sanitizer_options.cc: a report fails the test); mpk_sanitize_tests builds just those programs.
# Included by the top-level CMakeLists.txt before config/ and tests/, which both mark suites.
add_custom_target(mpk_sanitize_tests)
function(mpk_sanitize_test_program target)
  if(MPK_SANITIZE)
    target_sources(${target} PRIVATE ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/sanitizer_options.cc)
  endif()
  add_dependencies(mpk_sanitize_tests ${target})
endfunction()
