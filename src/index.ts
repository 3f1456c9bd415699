import { loadSettings, type Settings } from "./config";
import { reconcile } from "./cron/reconcile";
import { pruneStorage } from "./cron/retention";
import { log } from "./log";
import { serve } from "./router";

export default {
	fetch: serve,

	/**
	 * The cron: retention (the stats rollup first), then the KV reconcile. Each is bounded per run,
	 * goes on where the last run stopped, and logs one JSON line. A failing retention does not keep
	 * the reconcile from running; the run still fails, with the first error, once both have had
	 * their turn. A bad setting fails the run before either, with a line that names it.
	 */
	async scheduled(controller, env) {
		let settings: Settings;
		try {
			settings = loadSettings(env);
		} catch (error) {
			log("error", "cron not run", { cron: controller.cron, error: String(error) });
			throw error;
		}
		const now = Math.floor(controller.scheduledTime / 1000);
		const failures: unknown[] = [];
		const step = async (name: string, work: () => Promise<object>) => {
			try {
				log("info", name, { cron: controller.cron, ...(await work()) });
			} catch (error) {
				log("error", `${name} failed`, { cron: controller.cron, error: String(error) });
				failures.push(error);
			}
		};
		await step("retention", () => pruneStorage(env.DB, now, settings.retention));
		await step("reconcile", () =>
			reconcile(env, now, settings.reconcileBatchSize, settings.policy),
		);
		if (failures.length > 0) throw failures[0];
	},
} satisfies ExportedHandler<Env>;
