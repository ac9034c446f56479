import Mustache

/// The admin pages' swift-mustache templates, compiled into the binary (a deployed `syncledger`
/// needs no template directory). Every value goes through `{{name}}`, which HTML-escapes
/// `< > & " '`; the triple mustache (unescaped) is used nowhere. Links built from data are
/// percent-encoded in Swift before the template escapes them again for the attribute.
enum AdminTemplates {
    static func library() throws -> MustacheLibrary {
        var lib = MustacheLibrary()
        for (name, text) in all { try lib.register(text, named: name) }
        return lib
    }

    static let all: [(String, String)] = [
        ("head", head), ("foot", foot), ("refresh", refresh), ("login", login), ("dashboard", dashboard),
        ("runs", runs), ("chart", chart), ("run", run), ("appointments", appointments),
        ("appointment", appointment), ("message", message),
    ]

    static let head = """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>{{title}} · SyncLedger admin</title>
        {{#reload}}<meta http-equiv="refresh" content="{{reload}}">{{/reload}}
        <link rel="stylesheet" href="/admin/admin.css">
        </head><body>
        <header><a class="brand" href="/admin">SyncLedger</a>
        {{#user}}<nav><a href="/admin">Health</a> <a href="/admin/runs">Runs</a> <a href="/admin/appointments">Appointments</a></nav>
        <form method="post" action="/admin/logout" class="inline" id="logout"><input type="hidden" name="csrf" value="{{csrf}}">
        <span class="who">{{user}}</span> <button type="submit">Log out</button></form>{{/user}}
        </header><main>
        {{#flash}}<p class="flash" id="flash">{{flash}}</p>{{/flash}}
        {{#error}}<p class="error" id="error">{{error}}</p>{{/error}}

        """

    static let foot = """
        </main><footer>Times are the practice's local time ({{zone}}).</footer></body></html>

        """

    /// The refresh buttons: POST → the run queue (the same one `POST /api/v1/sync` uses).
    static let refresh = """
        <section class="refresh"><h2>Refresh from IntakeQ</h2>
        <form method="post" action="/admin/refresh" class="inline" id="refresh-all">
        <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="back" value="{{back}}">
        <input type="hidden" name="scope" value="all"><button type="submit" id="refresh-all-button">Refresh all</button></form>
        <form method="post" action="/admin/refresh" class="inline" id="refresh-org">
        <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="back" value="{{back}}">
        <input type="hidden" name="scope" value="org">
        <select name="org" aria-label="organisation">{{#organizations}}<option value="{{id}}">{{name}}</option>{{/organizations}}</select>
        <button type="submit" id="refresh-org-button">Refresh organisation</button></form>
        <form method="post" action="/admin/refresh" class="inline" id="refresh-patient">
        <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="back" value="{{back}}">
        <input type="hidden" name="scope" value="patient">
        <select name="patient" aria-label="patient">{{#patients}}<option value="{{id}}"{{#selected}} selected{{/selected}}>{{name}} ({{organization}})</option>{{/patients}}</select>
        <button type="submit" id="refresh-patient-button">Refresh patient</button></form>
        </section>

        """

    static let login = """
        {{>head}}<h1>Sign in</h1>
        <form method="post" action="/admin/login" id="login" class="stack">
        <input type="hidden" name="csrf" value="{{loginCSRF}}">
        <label for="token">Admin token</label>
        <input type="password" name="token" id="token" autocomplete="off" required>
        <button type="submit" id="sign-in">Sign in</button></form>
        <p class="muted">An admin token from <code>syncledger token new --name NAME --role admin</code>. Reader tokens cannot sign in here.</p>
        {{>foot}}
        """

    static let dashboard = """
        {{>head}}<h1>Health</h1>
        {{#hasProblems}}<ul class="problems" id="problems">{{#problems}}<li>{{.}}</li>{{/problems}}</ul>{{/hasProblems}}
        {{^problems}}<p class="ok" id="all-ok">All good.</p>{{/problems}}
        <!-- ALERTS: the built-in alerts sent (issue 17, part 3) are listed here; empty until that lands. -->
        <section id="alerts"><h2>Alerts</h2>
        {{#hasAlerts}}<ul>{{#alerts}}<li>{{at}} · {{alert}} · {{summary}}</li>{{/alerts}}</ul>{{/hasAlerts}}
        {{^alerts}}<p class="muted">No alerts sent.</p>{{/alerts}}</section>
        <section><h2>Last run of each type</h2><div class="scroll"><table id="last-runs">
        <tr><th>type</th><th>started</th><th>status</th><th>new</th><th>updated</th><th>removed</th><th>errors</th><th>duration</th><th>API calls</th></tr>
        {{#lastRuns}}<tr><td>{{type}}</td>{{#run}}<td><a href="/admin/runs/{{href}}">{{started}}</a></td><td class="status {{status}}">{{status}}</td><td>{{new}}</td><td>{{updated}}</td><td>{{removed}}</td><td>{{errors}}</td><td>{{duration}}</td><td>{{apiCalls}}</td>{{/run}}{{^run}}<td colspan="8" class="muted">never</td>{{/run}}</tr>{{/lastRuns}}
        </table></div></section>
        <section><h2>At a glance</h2><dl class="facts" id="facts">
        <dt>Nightly run</dt><dd>{{nightly}}</dd>
        <dt>Webhook inbox</dt><dd>{{inbox}}</dd>
        <dt>API budget left today</dt><dd>{{budget}}</dd>
        <dt>Run queue</dt><dd>{{queue}}</dd>
        <dt>Head</dt><dd><code>{{head}}</code> (views {{lag}} behind)</dd>
        <dt>Last verify</dt><dd>{{verify}}</dd>
        <dt>Appointments</dt><dd>{{appointmentCount}} ({{upcomingCount}} in the next 7 days)</dd>
        <dt>Runs recorded</dt><dd>{{runCount}}</dd>
        </dl></section>
        {{>refresh}}
        {{>foot}}
        """

    static let runs = """
        {{>head}}<h1>Runs</h1>
        <form method="get" action="/admin/runs" class="filters" id="filters">
        <label>Organisation <select name="org" id="f-org"><option value="">all</option>{{#organizations}}<option value="{{id}}"{{#selected}} selected{{/selected}}>{{name}}</option>{{/organizations}}</select></label>
        <label>Type <select name="type" id="f-type"><option value="">all</option>{{#types}}<option{{#selected}} selected{{/selected}}>{{value}}</option>{{/types}}</select></label>
        <label>Status <select name="status" id="f-status"><option value="">all</option>{{#statuses}}<option{{#selected}} selected{{/selected}}>{{value}}</option>{{/statuses}}</select></label>
        <label>From <input type="date" name="from" id="f-from" value="{{from}}"></label>
        <label>To <input type="date" name="to" id="f-to" value="{{to}}"></label>
        <button type="submit" id="apply">Apply</button> <a href="/admin/runs">clear</a>
        </form>
        <p><a href="/admin/runs.csv{{csvQuery}}" id="csv" download>Download CSV</a> · {{shown}} of {{total}} runs shown</p>
        {{>chart}}
        <div class="scroll"><table id="runs">
        <tr><th>started</th><th>type</th><th>scope</th><th>status</th><th>new</th><th>upd.</th><th>rem.</th><th>err.</th><th>duration</th><th>API</th><th>by</th></tr>
        {{#pending}}<tr class="pending" data-run="{{id}}"><td><a href="/admin/runs/{{href}}">{{queued}}</a></td><td>{{type}}</td><td>{{scope}}</td><td class="status {{status}}">{{status}}</td><td colspan="7"></td></tr>{{/pending}}
        {{#rows}}<tr data-run="{{id}}"><td><a href="/admin/runs/{{href}}">{{started}}</a></td><td>{{type}}</td><td>{{scope}}</td><td class="status {{status}}">{{status}}</td><td>{{new}}</td><td>{{updated}}</td><td>{{removed}}</td><td>{{errors}}</td><td>{{duration}}</td><td>{{apiCalls}}</td><td>{{by}}</td></tr>{{/rows}}
        </table></div>
        {{^rows}}<p class="muted">No runs match.</p>{{/rows}}
        {{>refresh}}
        {{>foot}}
        """

    /// Runs per local day (bars) and the share that did not complete (line), last 30 days.
    static let chart = """
        <figure class="chart"><svg id="chart" viewBox="0 0 {{width}} {{height}}" role="img" aria-label="Runs and error rate per day, last 30 days">
        <title>Runs per day (bars) and error rate (line), last 30 days</title>
        <line x1="{{left}}" y1="{{base}}" x2="{{right}}" y2="{{base}}" stroke="#999"/>
        {{#bars}}<rect class="bar" x="{{x}}" y="{{y}}" width="{{w}}" height="{{h}}" fill="#4a78b0"><title>{{label}}</title></rect>{{/bars}}
        <polyline points="{{errorLine}}" fill="none" stroke="#c0392b" stroke-width="2"/>
        {{#ticks}}<text x="{{x}}" y="{{y}}" font-size="10" text-anchor="middle" fill="#555">{{text}}</text>{{/ticks}}
        <text x="{{left}}" y="12" font-size="11" fill="#4a78b0">runs (max {{max}})</text>
        <text x="{{right}}" y="12" font-size="11" text-anchor="end" fill="#c0392b">error rate (0–100%)</text>
        </svg><figcaption>{{caption}}</figcaption></figure>

        """

    static let run = """
        {{>head}}<h1>Run <code>{{id}}</code></h1>
        <dl class="facts" id="run-facts">
        <dt>Type</dt><dd>{{type}}</dd><dt>Scope</dt><dd>{{scope}}</dd><dt>Status</dt><dd class="status {{status}}" id="run-status">{{status}}</dd>
        <dt>Started</dt><dd>{{started}}</dd><dt>Completed</dt><dd>{{completed}}</dd><dt>Duration</dt><dd>{{duration}}</dd>
        <dt>Triggered by</dt><dd>{{by}}</dd>
        <dt>Appointments</dt><dd>{{new}} new, {{updated}} updated, {{unchanged}} unchanged, {{removed}} removed, {{errors}} errors</dd>
        <dt>API calls</dt><dd id="api-calls">{{apiCalls}} calls, {{retries}} retries, {{waits}} rate-limit waits{{#rateLimitHit}} (IntakeQ answered 429){{/rateLimitHit}}</dd>
        {{#errorMessage}}<dt>Error</dt><dd class="error">{{errorMessage}}</dd>{{/errorMessage}}
        </dl>
        <section><h2>Errors</h2>{{#hasErrors}}<ul id="errors">{{#errors}}<li>{{.}}</li>{{/errors}}</ul>{{/hasErrors}}{{^errors}}<p class="muted">None.</p>{{/errors}}</section>
        <section><h2>Warnings</h2>{{#hasWarnings}}<ul id="warnings">{{#warnings}}<li>{{.}}</li>{{/warnings}}</ul>{{/hasWarnings}}{{^warnings}}<p class="muted">None.</p>{{/warnings}}</section>
        <section><h2>Appointments it changed ({{changeCount}})</h2>
        <div class="scroll"><table id="changes"><tr><th>change</th><th>start</th><th>patient</th><th>organisation</th><th>status</th></tr>
        {{#changes}}<tr><td>{{kind}}</td><td><a href="/admin/appointments/{{href}}">{{start}}</a></td><td>{{patient}}</td><td>{{organization}}</td><td>{{status}}</td></tr>{{/changes}}
        </table></div>{{^changes}}<p class="muted">None.</p>{{/changes}}</section>
        {{>foot}}
        """

    static let appointments = """
        {{>head}}<h1>Appointments</h1>
        <form method="get" action="/admin/appointments" class="filters" id="search">
        <label>Patient or id <input type="search" name="q" id="q" value="{{q}}"></label>
        <label>Organisation <select name="org" id="a-org"><option value="">all</option>{{#organizations}}<option value="{{id}}"{{#selected}} selected{{/selected}}>{{name}}</option>{{/organizations}}</select></label>
        <label>From <input type="date" name="from" value="{{from}}"></label>
        <label>To <input type="date" name="to" value="{{to}}"></label>
        <label><input type="checkbox" name="removed" value="1"{{#includeRemoved}} checked{{/includeRemoved}}> removed too</label>
        <button type="submit" id="search-button">Search</button>
        </form>
        {{#searched}}<section><h2>{{resultTitle}}</h2><div class="scroll"><table id="results">
        <tr><th>start</th><th>patient</th><th>organisation</th><th>status</th><th>visit</th><th>where</th></tr>
        {{#results}}<tr><td><a href="/admin/appointments/{{href}}">{{start}}</a></td><td>{{patient}}</td><td>{{organization}}</td><td>{{status}}</td><td>{{visit}}</td><td>{{place}}</td></tr>{{/results}}
        </table></div></section>{{/searched}}
        <section id="upcoming"><h2>Upcoming, next 7 days</h2>
        {{#upcoming}}<h3>{{name}}</h3>{{#hasRows}}<div class="scroll"><table class="upcoming" data-org="{{id}}">
        <tr><th>start</th><th>patient</th><th>status</th><th>visit</th><th>where</th></tr>
        {{#rows}}<tr><td><a href="/admin/appointments/{{href}}">{{start}}</a></td><td>{{patient}}</td><td>{{status}}</td><td>{{visit}}</td><td>{{place}}</td></tr>{{/rows}}
        </table></div>{{/hasRows}}{{^rows}}<p class="muted">None.</p>{{/rows}}{{/upcoming}}
        </section>
        {{>refresh}}
        {{>foot}}
        """

    static let appointment = """
        {{>head}}<h1>Appointment <code>{{id}}</code></h1>
        <dl class="facts" id="appointment-facts">
        <dt>Start</dt><dd>{{start}}</dd><dt>Patient</dt><dd id="patient">{{patient}}</dd><dt>Organisation</dt><dd>{{organization}}</dd>
        <dt>Status</dt><dd>{{status}}</dd><dt>Visit</dt><dd>{{visit}}</dd><dt>Service</dt><dd>{{service}}</dd>
        <dt>Where</dt><dd>{{#link}}<a href="{{link}}" rel="noopener noreferrer">{{link}}</a>{{/link}}{{^link}}{{place}}{{/link}}</dd>
        </dl>
        <section><h2>History</h2><div class="scroll"><table id="history">
        <tr><th>recorded</th><th>event</th><th>run</th><th>changes</th></tr>
        {{#history}}<tr><td>{{at}}</td><td>{{type}}</td><td>{{#run}}<a href="/admin/runs/{{runHref}}">{{runType}}</a>{{/run}}</td>
        <td><ul class="changes">{{#changes}}<li><code>{{field}}</code>: {{from}} → {{to}}</li>{{/changes}}</ul></td></tr>{{/history}}
        </table></div></section>
        {{>refresh}}
        {{>foot}}
        """

    static let message = """
        {{>head}}<h1>{{heading}}</h1><p id="message">{{text}}</p><p><a href="{{back}}">Back</a></p>
        {{>foot}}
        """

    static let css = """
        :root { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330; background: #fafbfc; }
        body { margin: 0; }
        header { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center; padding: .6rem 1rem; background: #1d2330; color: #fff; }
        header a { color: #fff; } header nav a { margin-right: .8rem; } .brand { font-weight: 700; text-decoration: none; }
        header form { margin-left: auto; } .who { opacity: .8; margin-right: .4rem; }
        main { padding: 1rem; max-width: 72rem; margin: 0 auto; }
        footer { padding: 1rem; color: #666; font-size: .85rem; text-align: center; }
        h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 1.5rem; } h3 { font-size: 1rem; }
        table { border-collapse: collapse; width: 100%; font-size: .9rem; background: #fff; }
        th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #e3e6ea; vertical-align: top; }
        th { background: #f0f2f5; white-space: nowrap; }
        .scroll { overflow-x: auto; }
        .filters, .refresh form, .inline { display: inline-flex; flex-wrap: wrap; gap: .4rem .8rem; align-items: end; margin: .3rem 0; max-width: 100%; }
        .refresh form { display: flex; }
        .filters label { display: flex; flex-direction: column; font-size: .8rem; color: #444; }
        .stack { display: flex; flex-direction: column; gap: .5rem; max-width: 24rem; }
        input, select, button { font: inherit; padding: .35rem .5rem; max-width: 100%; min-width: 0; }
        main { overflow-wrap: anywhere; }
        button { background: #2f5e94; color: #fff; border: 0; border-radius: 4px; cursor: pointer; }
        header button { background: #444c5c; }
        .facts { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: .3rem 1rem; }
        .facts dt { font-weight: 600; } .facts dd { margin: 0; }
        .status.completed { color: #1e7d32; } .status.failed { color: #b3261e; font-weight: 600; }
        .status.partial_success { color: #a15c00; } .status.queued, .status.running, .status.in_progress { color: #2f5e94; }
        .flash { background: #e7f2ff; padding: .5rem .8rem; border-radius: 4px; }
        .error, .problems { background: #fdecea; padding: .5rem .8rem; border-radius: 4px; color: #8a1c14; }
        .ok { color: #1e7d32; } .muted { color: #777; }
        .scroll td { overflow-wrap: normal; }
        #runs td, #last-runs td, .upcoming td:first-child, #results td:first-child, #changes td:nth-child(2), #history td:first-child { white-space: nowrap; }
        figure.chart { margin: .5rem 0; }
        .chart svg { width: 100%; height: auto; max-height: 16rem; background: #fff; }
        ul.changes { margin: 0; padding-left: 1rem; }
        code { word-break: break-all; }
        @media (max-width: 40rem) { main { padding: .5rem; } th, td { padding: .25rem; } .facts { grid-template-columns: 1fr; } }

        """
}
