// Node-RED settings for fieldline's benchmark peer (src/fieldline/bench/nodered.py).
// The runtime only: no editor, no HTTP server, no network beyond the broker and
// PostgreSQL, nothing installed at run time.
module.exports = {
    flowFile: "flows.json",
    // The harness writes flows_cred.json in a throwaway directory: plain JSON, no key.
    credentialSecret: false,
    // Neither the editor nor HTTP-in endpoints: Node-RED then opens no port at all.
    httpAdminRoot: false,
    httpNodeRoot: false,
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false, updateNotification: false },
    externalModules: {
        autoInstall: false,
        palette: { allowInstall: false },
        modules: { allowInstall: false },
    },
    // The function node gets `pg` from the global context, as the Node-RED docs
    // suggest, instead of `libs`, which would npm-install it into the user directory.
    functionExternalModules: false,
    functionGlobalContext: { pg: require("pg") },
    mqttReconnectTime: 1000,
    logging: { console: { level: "info", metrics: false, audit: false } },
    editorTheme: { projects: { enabled: false } },
};
