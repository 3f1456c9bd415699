// One benchmark server: a Worker on local workerd through wrangler's programmatic API
// (`unstable_startWorker`, the engine of `wrangler dev`), started by bench/run.mjs in a process
// group of its own. Usage: node bench/serve.mjs '<json>' with
//   {"config": "/abs/wrangler.toml", "entrypoint": "/abs/entry.ts" (optional, overrides main),
//    "port": 8790, "persist": "/abs/dir", "vars": {"NAME": "value"}}
//
// Why not the `wrangler dev` command: it always attaches the V8 inspector to the Worker and relays
// every console.log through it to the terminal. That relay is a development tool, not the Worker,
// and it is expensive: with it (`npm run bench -- --cli`) a lookup, which then logged one line,
// cost 2.2 ms of CPU instead of 1.2 ms, against 1.4 instead of 1.1 ms for the reference, which
// logs nothing. So the inspector is off here, and log lines are dropped once workerd has written
// them (warnings and errors still reach stderr, the server's log file): the Worker's own cost of
// logging (building and writing each line) stays in the measurement, and so does some of the
// rest, since miniflare's Node process still reads and classifies each line before dropping it.
// The Worker now logs only for callbacks that repeat events or change entries (about 7 % of the
// ingest mix), never for a lookup; the references never log.

// No metrics and no Request.cf download (the machine may have no internet), set before wrangler
// loads.
process.env.WRANGLER_SEND_METRICS = "false";
process.env.CLOUDFLARE_CF_FETCH_ENABLED = "false";
const { unstable_startWorker } = await import("wrangler");

const options = JSON.parse(process.argv[2]);

const worker = await unstable_startWorker({
	config: options.config,
	...(options.entrypoint ? { entrypoint: options.entrypoint } : {}),
	bindings: Object.fromEntries(
		Object.entries(options.vars ?? {}).map(([name, value]) => [
			name,
			{ type: "plain_text", value },
		]),
	),
	dev: {
		server: { hostname: "127.0.0.1", port: options.port },
		inspector: false,
		persist: options.persist,
		watch: false,
		logLevel: "warn",
		structuredLogsHandler: ({ level, message }) => {
			if (level === "warn" || level === "error") process.stderr.write(`${level}: ${message}\n`);
		},
	},
});
await worker.ready;
console.log(`ready on ${(await worker.url).href}`);

let stopping = false;
async function stop() {
	if (stopping) return;
	stopping = true;
	try {
		await worker.dispose();
	} finally {
		process.exit(0);
	}
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
