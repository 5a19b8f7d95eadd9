// sandbox_cmd.h — `nv sandbox`: sandboxes that live, from the command line (sandbox_cmd.cc).
//
//   nv sandbox create [--tier T] [--env K=V]... [--cwd DIR] [--lifetime-ms N] [--idle-ms N]
//                     [--label K=V]... [--from-snapshot NAME] [--mount HOST:GUEST[:ro|:rw]]...
//                                                                    prints the new id
//   nv sandbox sync ID                                               rw mounts copied out now
//   nv sandbox exec ID [--lang python|bash|sh|js] [--context NAME] [--background] CODE|-
//   nv sandbox cp LOCAL ID:PATH | cp ID:PATH LOCAL                   binary-exact, in pieces
//   nv sandbox ls ID PATH [-r] · get ID · ls-all [--label K=V] · processes ID · kill ID PID [SIG]
//   nv sandbox fork ID [-n N] · snapshot ID NAME · snapshots · snapshot-rm NAME
//   nv sandbox pause ID · resume ID · keepalive ID [--extend-ms N] · rm ID
// Every command takes --json (camelCase, common/json.h). The owner of every request is
// "uid:<real uid>". Exit status: see kSandboxUsage in sandbox_cmd.cc (`nv sandbox --help`).
#pragma once

namespace nv::launcher {

// argv[0] is "sandbox".
int sandbox_main(int argc, char** argv);

}  // namespace nv::launcher
