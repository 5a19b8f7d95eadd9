// mcp_sdk_client.mjs — drives nv-api's /mcp (or nv-mcp over stdio) with the OFFICIAL MCP
// TypeScript SDK (@modelcontextprotocol/sdk from npm, pinned by tests/api/api_stack.py), a
// client nobody here wrote. Prints one JSON object of findings; exit 1 on any failure.
//   node mcp_sdk_client.mjs http URL KEY MODE      MODE: basic | sandbox
//   node mcp_sdk_client.mjs stdio NV_MCP_BINARY MODE
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [kind, target, a3, a4] = process.argv.slice(2);
const mode = kind === "http" ? a4 : a3;
const out = { ok: false, steps: [] };
const client = new Client({ name: "neurovisor-test", version: "1.0.0" });
const transport =
  kind === "http"
    ? new StreamableHTTPClientTransport(new URL(target), {
        requestInit: { headers: { Authorization: `Bearer ${a3}` } },
      })
    : new StdioClientTransport({ command: target, args: [], env: process.env, stderr: "inherit" });

function need(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  out.steps.push(what);
}
async function call(name, args, progress) {
  const r = await client.callTool({ name, arguments: args }, undefined, {
    timeout: 600000,
    onprogress: progress,
    resetTimeoutOnProgress: true,
  });
  if (r.isError) throw new Error(`${name} failed: ${JSON.stringify(r.content)}`);
  return r.structuredContent;
}

try {
  await client.connect(transport);
  out.serverVersion = client.getServerVersion();
  out.protocolVersion = transport.protocolVersion ?? null;
  const { tools } = await client.listTools();
  out.tools = tools.map((t) => t.name).sort();
  for (const n of ["run_code", "create_sandbox", "exec", "write_file", "read_file", "list_files",
                   "fork_sandbox", "destroy_sandbox", "submit_task"]) {
    need(out.tools.includes(n), `tool ${n} listed`);
  }
  need(tools.every((t) => t.inputSchema?.type === "object" && t.outputSchema?.type === "object"),
       "every tool has input and output schemas");
  if (mode === "basic" || mode === "all") {
    const progress = [];
    const r = await call("run_code", { language: "python", code: "print(6*7)" },
                         (p) => progress.push(p));
    need(r.exitCode === 0 && r.stdout === "42\n", "run_code print(6*7) -> 42");
    out.runCodeProgress = progress.length;
    // The executor's "started" status comes first, always; output may come only in the result
    // when the program ends before the guest sends it on, so it is not required here.
    need(progress.some((p) => (p.message ?? "").startsWith("started")), "progress notifications");
    need(progress.every((p, i) => i === 0 || p.progress > progress[i - 1].progress),
         "progress increases");
    const bad = await client.callTool({ name: "run_code", arguments: { language: "cobol", code: "x" } });
    need(bad.isError === true, "a bad language is a tool error (isError), not a crash");
  }
  if (mode === "sandbox" || mode === "all") {
    const s = await call("create_sandbox", {});
    need(typeof s.sandboxId === "string" && s.sandboxId.length > 0, "create_sandbox");
    const data = "line one\nłódź ✓\n";
    await call("write_file", { sandboxId: s.sandboxId, path: "/home/agent/note.txt", content: data });
    const back = await call("read_file", { sandboxId: s.sandboxId, path: "/home/agent/note.txt" });
    need(back.content === data, "write_file then read_file: the same text");
    const ls = await call("list_files", { sandboxId: s.sandboxId, path: "/home/agent" });
    need(ls.entries.some((e) => e.path === "/home/agent/note.txt"), "list_files shows it");
    const e = await call("exec", { sandboxId: s.sandboxId, language: "bash",
                                   code: "cat /home/agent/note.txt | wc -l" });
    need(e.stdout.trim() === "2", "exec sees the file");
    const f = await call("fork_sandbox", { sandboxId: s.sandboxId, count: 1 });
    need(f.sandboxIds.length === 1, "fork_sandbox made one");
    const fe = await call("read_file", { sandboxId: f.sandboxIds[0], path: "/home/agent/note.txt" });
    need(fe.content === data, "the fork has the file");
    for (const id of [s.sandboxId, ...f.sandboxIds]) await call("destroy_sandbox", { sandboxId: id });
    out.steps.push("destroyed");
  }
  out.ok = true;
} catch (e) {
  out.error = String(e?.stack ?? e);
} finally {
  try { await client.close(); } catch {}
}
console.log(JSON.stringify(out));
process.exit(out.ok ? 0 : 1);
