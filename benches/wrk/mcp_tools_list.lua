-- wrk script: `tools/list` on POST /mcp, as a 2026-07-28 client sends it
-- (MCP-Protocol-Version and Mcp-Method headers, `_meta` in the body), or,
-- with MCP_SESSION_ID set, as a 2025 client on that session.
--
--   wrk -t2 -c32 -d10s --latency -s benches/wrk/mcp_tools_list.lua http://127.0.0.1:PORT/mcp
--   MCP_SESSION_ID=... wrk ... -s benches/wrk/mcp_tools_list.lua http://127.0.0.1:PORT/mcp
--
-- No response() callback: wrk would copy every 2 MB body into Lua. The
-- harness reads wrk's "Non-2xx or 3xx responses" line instead, and checks
-- one answer itself before the run.

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"

local session = os.getenv("MCP_SESSION_ID")
if session and session ~= "" then
  wrk.headers["Mcp-Session-Id"] = session
  wrk.headers["MCP-Protocol-Version"] = os.getenv("MCP_LEGACY_VERSION") or "2025-11-25"
  wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'
else
  wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
  wrk.headers["Mcp-Method"] = "tools/list"
  wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{'
    .. '"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
    .. '"io.modelcontextprotocol/clientCapabilities":{}}}}'
end
