# install_tool.cmake - what `cmake --install` puts where, and the Debian package (cpack -G DEB).
#
#   <prefix>/bin                       mpk-run, mpk-learn, mpk-stat, mpk-policy-check
#   <prefix>/<libdir>                  libmpk.so*, libmpk_shim.so
#   <prefix>/include                   mpk.h
#   <prefix>/share/libmpk/policies     the annotated example policies (config/examples)
#   <prefix>/share/doc/libmpk          README.md, config/README.md (as policies.md)
#
# mpk-run and mpk-learn find the shim in <prefix>/<libdir> (next to <prefix>/bin), so an install
# works from any prefix, and the package from /usr.

install(PROGRAMS ${CMAKE_SOURCE_DIR}/scripts/mpk-run ${CMAKE_SOURCE_DIR}/scripts/mpk-learn
        DESTINATION ${CMAKE_INSTALL_BINDIR})
file(GLOB MPK_EXAMPLE_POLICIES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/config/examples/*.toml)
install(FILES ${MPK_EXAMPLE_POLICIES} DESTINATION ${CMAKE_INSTALL_DATADIR}/libmpk/policies)
install(FILES ${CMAKE_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${CMAKE_SOURCE_DIR}/config/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR} RENAME policies.md)

set(CPACK_PACKAGE_NAME "libmpk-shim")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "libmpk-shim maintainers <maintainers@libmpk-shim.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "Intel MPK for unmodified programs: mprotect toggles as PKRU writes, per-thread isolation")
set(CPACK_PACKAGE_DESCRIPTION
    "libmpk.so and <mpk.h>: virtual protection keys over the 15 hardware keys, thread-local domains and
process-wide mpk_mprotect. libmpk_shim.so: LD_PRELOAD it (mpk-run) to turn an unmodified
program's repeated mprotect toggles into PKRU writes and isolate the regions a TOML policy names
per thread. Needs a CPU and kernel with protection keys (pku, ospke); elsewhere it passes
everything through.")
set(CPACK_GENERATOR "DEB")
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_ARCHITECTURE "amd64")
set(CPACK_DEBIAN_PACKAGE_SECTION "utils")
# What the libraries link (libc, libstdc++, libgcc), what the scripts run (bash, python3 with
# tomllib: 3.11), and libunwind, which the shim loads with dlopen for caller and start-routine rules.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libc6 (>= 2.36), libstdc++6 (>= 12), libgcc-s1, bash, python3 (>= 3.11)")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "libunwind8")
include(CPack)
