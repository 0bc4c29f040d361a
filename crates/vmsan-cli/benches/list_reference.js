// The Node.js vmsan's `vmsan list`, reduced to what it does on every run: read every VM
// state file, parse it, sort newest first and print a table. Used by `benches/list.rs` to
// compare against the Rust `vmsan list` on the same files.
//
// usage: node list_reference.js <VMSAN_HOME> [--json]
"use strict";
const fs = require("fs");
const path = require("path");

const home = process.argv[2];
const json = process.argv.includes("--json");
const dir = path.join(home, "vms");

function timeAgo(iso) {
  const s = Math.floor((Date.now() - Date.parse(iso)) / 1000);
  if (s < 30) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} minutes ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} hours ago`;
  return `${Math.floor(s / 86400)} days ago`;
}

const vms = [];
for (const name of fs.readdirSync(dir)) {
  if (!/^vm-[0-9a-f]{8}$/.test(name)) continue;
  vms.push(JSON.parse(fs.readFileSync(path.join(dir, name, "state.json"), "utf8")));
}
vms.sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));

if (json) {
  const statuses = {};
  for (const v of vms) statuses[v.status] = (statuses[v.status] || 0) + 1;
  process.stdout.write(
    JSON.stringify({
      count: vms.length,
      statuses,
      vms: vms.map((v) => ({
        id: v.id,
        status: v.status,
        createdAt: v.createdAt,
        memSizeMib: v.memSizeMib,
        vcpuCount: v.vcpuCount,
        runtime: v.runtime,
        timeoutAt: v.timeoutAt,
        snapshot: v.snapshot,
      })),
    }) + "\n",
  );
} else {
  const rows = [["ID", "STATUS", "CREATED", "MEMORY", "VCPUS", "RUNTIME", "TIMEOUT", "SNAPSHOT"]];
  for (const v of vms) {
    rows.push([
      v.id,
      v.status,
      timeAgo(v.createdAt),
      `${v.memSizeMib} MiB`,
      String(v.vcpuCount),
      v.runtime || "-",
      v.timeoutAt ? "in the future" : "-",
      v.snapshot || "-",
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  process.stdout.write(rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join("   ")).join("\n") + "\n");
}
