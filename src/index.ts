import { loadSettings } from "./config";
import { reconcile } from "./cron/reconcile";
import { pruneStorage } from "./cron/retention";
import { log } from "./log";
import { router } from "./router";

export default {
	fetch: (request, env, ctx) => router.fetch(request, env, ctx),

	/**
	 * The cron: retention, then the KV reconcile. Each is bounded per run, goes on where the last
	 * run stopped, and logs one JSON line.
	 */
	async scheduled(controller, env) {
		const settings = loadSettings(env);
		const now = Math.floor(controller.scheduledTime / 1000);
		const retention = await pruneStorage(env.DB, now, settings.retention);
		log("info", "retention", { cron: controller.cron, ...retention });
		const reconciled = await reconcile(env, now, settings.reconcileBatchSize, settings.policy);
		log("info", "reconcile", { cron: controller.cron, ...reconciled });
	},
} satisfies ExportedHandler<Env>;
