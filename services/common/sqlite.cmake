# nv_sqlite: a small layer over libsqlite3 (sqlite_db.{h,cc}) for the registries that must
# survive a restart (nv-sandbox-executor's sandboxes; the pool manager's leases may use it too).
if(NOT TARGET nv_sqlite)
  add_library(nv_sqlite STATIC ${CMAKE_CURRENT_LIST_DIR}/sqlite_db.cc)
  nv_warnings(nv_sqlite)
  target_include_directories(nv_sqlite PUBLIC ${CMAKE_CURRENT_LIST_DIR}/..)
  target_link_libraries(nv_sqlite PUBLIC nv_schemas PkgConfig::SQLITE3)
endif()
