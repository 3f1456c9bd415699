// Load rounds with autocannon's programmatic API, and the statistics of the rounds.
import autocannon from "autocannon";

/**
 * Loads `baseUrl` for `seconds` with `connections` keep-alive connections. `next()` gives each
 * request's `{path, body}`; it is called through autocannon's `setupRequest` from one shared
 * iterator, so the connections together walk one pre-generated sequence instead of each starting
 * over at its first request. Any non-2xx answer or socket error fails the round: a benchmark of
 * errors would measure nothing.
 */
export async function loadRound({ baseUrl, seconds, connections, method, headers = {}, next }) {
	const result = await autocannon({
		url: baseUrl,
		connections,
		duration: seconds,
		pipelining: 1,
		requests: [
			{
				method,
				headers,
				setupRequest: (request) => ({ ...request, ...next() }),
			},
		],
	});
	const failures = result.non2xx + result.errors + result.timeouts;
	if (failures > 0) {
		throw new Error(
			`${method} ${baseUrl}: ${result.non2xx} non-2xx, ${result.errors} errors, ` +
				`${result.timeouts} timeouts in ${result.requests.total} requests`,
		);
	}
	return {
		rps: result["2xx"] / result.duration,
		p50ms: result.latency.p50,
		p99ms: result.latency.p99,
		requests: result["2xx"],
	};
}

export function median(values) {
	const sorted = [...values].sort((a, b) => a - b);
	const mid = sorted.length >> 1;
	return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Noisy: some round is more than 10 % away from the median of the rounds. */
export function isNoisy(values, tolerance = 0.1) {
	const m = median(values);
	return values.some((value) => Math.abs(value - m) > tolerance * Math.abs(m));
}

export const round = (value, digits = 2) => Number(value.toFixed(digits));
