// Reference for the startup benchmark: a Worker that does nothing at startup.
export default {
	fetch() {
		return new Response("ok");
	},
};
