// CPU time from /proc (Linux only; elsewhere every figure is null): per process group (each
// benchmark server is one), of this process (which also runs autocannon), and of the machine.
// It tells how much CPU a request costs a server, and whether something else was running.
import { readdirSync, readFileSync } from "node:fs";

const TICK_MS = 10; // USER_HZ is 100 on Linux

function machineBusyTicks() {
	const [, ...fields] = readFileSync("/proc/stat", "utf8").split("\n", 1)[0].trim().split(/\s+/);
	const ticks = fields.map(Number);
	const total = ticks.slice(0, 8).reduce((sum, value) => sum + value, 0); // up to steal
	return total - ticks[3] - ticks[4]; // minus idle and iowait
}

/** utime + stime of every process, by process group id. */
function ticksByGroup() {
	const groups = new Map();
	for (const pid of readdirSync("/proc")) {
		if (!/^\d+$/.test(pid)) continue;
		let stat;
		try {
			stat = readFileSync(`/proc/${pid}/stat`, "utf8");
		} catch {
			continue; // exited meanwhile
		}
		const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
		const pgid = Number(fields[2]);
		groups.set(pgid, (groups.get(pgid) ?? 0) + Number(fields[11]) + Number(fields[12]));
	}
	return groups;
}

export function cpuSnapshot() {
	try {
		const self = process.cpuUsage();
		return { at: performance.now(), busy: machineBusyTicks(), groups: ticksByGroup(), self };
	} catch {
		return null;
	}
}

/**
 * CPU used between two snapshots: `groupMs(pgid)`, `selfMs`, and `otherPercent`, the share of one
 * core used by processes that are neither ours nor in `ourGroups`.
 */
export function cpuBetween(before, after, ourGroups) {
	if (!before || !after) return null;
	const groupMs = (pgid) =>
		((after.groups.get(pgid) ?? 0) - (before.groups.get(pgid) ?? 0)) * TICK_MS;
	const selfMs =
		(after.self.user - before.self.user + after.self.system - before.self.system) / 1000;
	const oursMs = ourGroups.reduce((sum, pgid) => sum + groupMs(pgid), 0) + selfMs;
	const busyMs = (after.busy - before.busy) * TICK_MS;
	const elapsedMs = after.at - before.at;
	return {
		groupMs,
		selfMs,
		otherPercent: Math.max(0, ((busyMs - oursMs) / elapsedMs) * 100),
	};
}
