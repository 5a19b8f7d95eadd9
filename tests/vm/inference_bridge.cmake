# The inference bridge end to end (issue 16 item 5): python's urllib in a real microVM posts to
# the Ollama and OpenAI endpoints on the guest's 127.0.0.1:11434 and gets the scripted model's
# answer through nv-sandbox-executor and nv-llm-gateway (tests/fixtures/fake_llm.py). Two VMs.
# Needs root and the guest image.
if(TARGET nv-sandbox-executor AND TARGET nv-vm-pool-manager AND TARGET nv-llm-gateway
   AND TARGET nv_test_support)
  nv_add_gtest(NAME inference_bridge_test
               SOURCES ${CMAKE_CURRENT_LIST_DIR}/inference_bridge_test.cc
               LIBS nv_common nv_test_support LABELS vm TIMEOUT 1800)
  add_dependencies(inference_bridge_test nv-sandbox-executor nv-vm-pool-manager nv-llm-gateway)
  if(TARGET nv-orchestrator)
    add_dependencies(inference_bridge_test nv-orchestrator)
  endif()
endif()
