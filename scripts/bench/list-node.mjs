// What the reference tool (a Node CLI) does for `vmsan list --json`: read every state file,
// parse it, sort newest first, print one JSON document. Test equipment for scripts/bench-list.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const vmsDir = join(process.env.VMSAN_HOME ?? "/var/lib/vmsan", "vms");
const vms = [];
for (const name of readdirSync(vmsDir)) {
  if (!/^vm-[0-9a-f]{8}$/.test(name)) continue;
  const s = JSON.parse(readFileSync(join(vmsDir, name, "state.json"), "utf8"));
  vms.push({
    id: s.id, status: s.status, createdAt: s.createdAt, memSizeMib: s.memSizeMib,
    vcpuCount: s.vcpuCount, runtime: s.runtime, timeoutAt: s.timeoutAt, snapshot: s.snapshot,
  });
}
vms.sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
const statuses = {};
for (const v of vms) statuses[v.status] = (statuses[v.status] ?? 0) + 1;
process.stdout.write(JSON.stringify({ count: vms.length, statuses, vms }) + "\n");
