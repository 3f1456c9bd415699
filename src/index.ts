import { loadSettings } from "./config";
import { reconcile } from "./cron/reconcile";
import { log } from "./log";
import { router } from "./router";

export default {
	fetch: (request, env, ctx) => router.fetch(request, env, ctx),

	/** The reconcile cron: one bounded batch per run, logged as one JSON line. */
	async scheduled(controller, env) {
		const { reconcileBatchSize } = loadSettings(env);
		const result = await reconcile(
			env,
			Math.floor(controller.scheduledTime / 1000),
			reconcileBatchSize,
		);
		log("info", "reconcile", { cron: controller.cron, ...result });
	},
} satisfies ExportedHandler<Env>;
