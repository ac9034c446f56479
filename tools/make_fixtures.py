#!/usr/bin/env python3
"""Generate SyncLedger's IntakeQ fixtures, deterministically (seeded; Python 3 stdlib only).

Writes:
  Fixtures/roster.json                 3 partner organisations, ~30 patients, practitioner mapping
  Fixtures/practice/day-01..05.json    the FULL practice state on each day of the timeline
  Fixtures/practice/expected.json      per day: counts and ids a full automated_daily sync must produce

Run from the repository root:  python3 tools/make_fixtures.py
All names, emails and links are invented (example.org / example.com / meet.google.com / zoom.us).
See Fixtures/README.md for the timeline and the traps.
"""
import copy
import datetime as dt
import json
import os
import random

SEED = 20261120
rng = random.Random(SEED)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Fixtures")
DAY_MS = 86_400_000
NOW1 = dt.datetime(2026, 11, 20, 10, 0, 0, tzinfo=dt.timezone.utc)
DAYS = 5


def ms(t):
    return int(t.timestamp() * 1000)


def now_of(day):
    return NOW1 + dt.timedelta(days=day - 1)


def iso_now(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


NOW1_MS = ms(NOW1)

# ---------------------------------------------------------------- practice settings
PRACTITIONERS = [
    {"Id": "64b7aa00000000000000beef", "CompleteName": "Jordan Lee", "FirstName": "Jordan", "LastName": "Lee",
     "Email": "jordan.lee@example.com"},
    {"Id": "64b7aa00000000000000c0de", "CompleteName": "Sam Rivera", "FirstName": "Sam", "LastName": "Rivera",
     "Email": "sam.rivera@example.com"},
    {"Id": "64b7aa00000000000000f00d", "CompleteName": "Priya Natarajan", "FirstName": "Priya",
     "LastName": "Natarajan", "Email": "priya.natarajan@example.com", "ExternalPractitionerId": "ext-pn-7"},
    # Not in the roster's practitioner mapping (the sync must cope with an unmapped practitioner).
    {"Id": "64b7aa00000000000000d1ce", "CompleteName": "Alex Moreno", "FirstName": "Alex", "LastName": "Moreno",
     "Email": "alex.moreno@example.com"},
]
LOCATIONS = [
    {"Id": "1", "Name": "Downtown Office", "Address": "120 Main Street, Suite 4, Salt Lake City, UT 84101"},
    {"Id": 2, "Name": "Telehealth", "Address": None},
    {"Id": "3", "Name": "Eastside Clinic", "Address": "455 East 900 South, Salt Lake City, UT 84111"},
    {"Id": 4, "Name": "Home Visits", "Address": ""},
]
LOCATION_DAY4 = {"Id": "5", "Name": "Westside Clinic", "Address": "77 Redwood Road, West Valley City, UT 84119"}
SERVICES = [
    {"Id": "3f2b6c1e-8a41-4c5e-9d2f-0a1b2c3d4e01", "Name": "Individual Therapy 50 min", "Duration": 50, "Price": 150.0},
    {"Id": "3f2b6c1e-8a41-4c5e-9d2f-0a1b2c3d4e02", "Name": "Couples Session 60 min", "Duration": 60, "Price": 180.0},
    {"Id": "3f2b6c1e-8a41-4c5e-9d2f-0a1b2c3d4e03", "Name": "Group Therapy 90 min", "Duration": 90, "Price": 60.0},
    {"Id": "3f2b6c1e-8a41-4c5e-9d2f-0a1b2c3d4e04", "Name": "Free Consultation 30 min", "Duration": 30, "Price": 0},
    {"Id": "3f2b6c1e-8a41-4c5e-9d2f-0a1b2c3d4e05", "Name": "Psychiatric Evaluation 60 min", "Duration": 60,
     "Price": 250.0},
]


def settings(day):
    locs = copy.deepcopy(LOCATIONS)
    if day >= 4:
        locs.append(dict(LOCATION_DAY4))
    return {"Locations": locs, "Services": SERVICES, "Practitioners": PRACTITIONERS}


# ---------------------------------------------------------------- clients and roster
FIRST = ["Avery", "Morgan", "Riley", "Dana", "Casey", "Jamie", "Quinn", "Taylor", "Rowan", "Harper", "Elliot",
         "Reese", "Skyler", "Emerson", "Finley", "Hayden", "Jesse", "Kendall", "Logan", "Parker", "Sawyer", "Blair",
         "Drew", "Frankie", "Jordan", "Lane", "Marlowe", "Noel", "Peyton", "Remy", "Sage", "Tatum", "Wren", "Arden",
         "Bellamy", "Cameron", "Dakota", "Ellis", "Gray", "Indigo", "Jules", "Kai", "Lennox", "Micah"]
LAST = ["Quinn", "Ellis", "Park", "Whitfield", "Hart", "Sullivan", "Okafor", "Brennan", "Castillo", "Dubois",
        "Fairbanks", "Gallagher", "Holloway", "Ibarra", "Jensen", "Kowalski", "Lindqvist", "Mbeki", "Nakamura",
        "Oyelaran", "Pemberton", "Quintero", "Rasmussen", "Sorensen", "Thackeray", "Underwood", "Valdez",
        "Wojcik", "Yamamoto", "Zeller", "Abernathy", "Birch", "Calloway", "Delacroix", "Eastman", "Fontaine"]


class Client:
    def __init__(self, cid, name, email, phone, dob, in_roster, id_as_string=False):
        self.cid = cid
        self.name = name
        self.email = email
        self.phone = phone
        self.dob = dob
        self.in_roster = in_roster
        self.id_as_string = id_as_string  # the API sends ClientId as a string for this client

    def api_id(self):
        return str(self.cid) if self.id_as_string else self.cid


def make_clients():
    used = set()
    clients = []

    def name():
        while True:
            n = rng.choice(FIRST) + " " + rng.choice(LAST)
            if n not in used and "Lee" not in n:
                used.add(n)
                return n

    def phone():
        return "(555) 01%d-%04d" % (rng.randint(0, 9), rng.randint(0, 9999))

    def dob():
        return "%04d-%02d-%02d" % (rng.randint(1950, 2006), rng.randint(1, 12), rng.randint(1, 28))

    for i in range(30):
        cid = 4101 + i
        n = name()
        email = n.lower().replace(" ", ".") + "@example.org"
        clients.append(Client(cid, n, email, phone(), dob(), True, id_as_string=(cid in (4109, 4123))))
    for i in range(16):
        cid = 5201 + i
        n = name()
        email = n.lower().replace(" ", ".") + "@example.com"
        clients.append(Client(cid, n, email, phone(), dob(), False, id_as_string=(cid == 5206)))
    # The partial-match trap: "Sam Lee" (roster) is a substring of "Sam Leeds" (not in roster),
    # and sam.lee@example.org of sam.leeds@example.org.
    by = {c.cid: c for c in clients}
    by[4117].name, by[4117].email = "Sam Lee", "sam.lee@example.org"
    clients.append(Client(5300, "Sam Leeds", "sam.leeds@example.org", phone(), dob(), False))
    # Unicode and an empty email.
    by[4112].name, by[4112].email = "Zoë Martínez-Ørsted", "zoe.martinez@example.org"
    by[5209].email = ""
    return clients


CLIENTS = make_clients()
BY_ID = {c.cid: c for c in CLIENTS}
ROSTER_IDS = {str(c.cid) for c in CLIENTS if c.in_roster}


def roster():
    orgs = [("fsh", "First Step House"), ("rrc", "River Road Recovery"), ("hwc", "Harbor Women's Center")]
    patients = {o[0]: [] for o in orgs}
    for i, c in enumerate(c for c in CLIENTS if c.in_roster):
        org = orgs[i % 3][0]
        p = {"id": "p-%03d" % (i + 1), "name": c.name}
        if c.cid not in (4104, 4119, 4128):  # a few patients without an email
            p["email"] = c.email
        # intakeq_client_id: mostly numbers, some strings (also where the API sends a number)
        p["intakeq_client_id"] = str(c.cid) if c.cid in (4105, 4114, 4123, 4127) else c.cid
        patients[org].append(p)
    return {
        "timezone": "America/Denver",
        "organizations": [{"id": o, "name": n, "patients": patients[o]} for o, n in orgs],
        "practitioners": [
            {"intakeq_id": "64b7aa00000000000000beef", "provider_id": "prov-lee"},
            {"intakeq_id": "64b7aa00000000000000c0de", "provider_id": "prov-rivera"},
            {"intakeq_id": "64b7aa00000000000000f00d", "provider_id": "prov-natarajan"},
        ],
    }


# ---------------------------------------------------------------- time helpers
def us_mountain_offset(t_utc):
    """Hours from UTC for America/Denver (US DST rules since 2007)."""
    y = t_utc.year

    def nth_sunday(month, n):
        d = dt.datetime(y, month, 1, tzinfo=dt.timezone.utc)
        d += dt.timedelta(days=(6 - d.weekday()) % 7)
        return d + dt.timedelta(weeks=n - 1)

    dst_start = nth_sunday(3, 2) + dt.timedelta(hours=9)  # 02:00 MST = 09:00 UTC
    dst_end = nth_sunday(11, 1) + dt.timedelta(hours=8)  # 02:00 MDT = 08:00 UTC
    return -6 if dst_start <= t_utc < dst_end else -7


def local(t_utc):
    return t_utc + dt.timedelta(hours=us_mountain_offset(t_utc))


def fmt_local_formatted(t):
    h = t.hour % 12 or 12
    return "%s, %s %d, %d %d:%02d %s" % (t.strftime("%A"), t.strftime("%B"), t.day, t.year, h, t.minute,
                                         "AM" if t.hour < 12 else "PM")


def set_times(a, start_ms, duration=None):
    duration = duration or a["Duration"]
    s = dt.datetime.fromtimestamp(start_ms / 1000, tz=dt.timezone.utc)
    e = s + dt.timedelta(minutes=duration)
    a["StartDate"] = start_ms
    a["EndDate"] = start_ms + duration * 60_000
    a["Duration"] = duration
    a["StartDateIso"] = s.strftime("%Y-%m-%dT%H:%M:%S") + ".0000000Z"
    a["EndDateIso"] = e.strftime("%Y-%m-%dT%H:%M:%S") + ".0000000Z"
    a["StartDateLocal"] = local(s).strftime("%Y-%m-%dT%H:%M:%S")
    a["EndDateLocal"] = local(e).strftime("%Y-%m-%dT%H:%M:%S")
    a["StartDateLocalFormatted"] = fmt_local_formatted(local(s))


def iso_z(t_ms):
    return dt.datetime.fromtimestamp(t_ms / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- appointments
ID_PREFIX = "6a3f"
_next = [0]


def new_id():
    _next[0] += 1
    return ID_PREFIX + "%08x" % (0x1000 + _next[0]) + "%012x" % rng.getrandbits(48)


def hexid():
    return "%024x" % rng.getrandbits(96)


def slot(day_offset):
    """Start (epoch ms) on NOW1's day + day_offset, business hours Mountain, 5-minute boundary."""
    day = (NOW1 + dt.timedelta(days=day_offset)).replace(hour=0, minute=0, second=0, microsecond=0)
    minutes = rng.randrange(15 * 60, 23 * 60, 5)  # 08:00-16:00 local-ish
    return ms(day + dt.timedelta(minutes=minutes))


def telehealth(kind, tid=None):
    tid = tid or "tv-%010x" % rng.getrandbits(40)
    code = "%06d" % rng.randint(0, 999999)
    if kind == "join":
        return {"Id": tid, "StartUrl": "https://telehealth.example.com/start/" + tid,
                "Invitation": "Join your video session: https://telehealth.example.com/join/%s\nInvitation Code: %s"
                              % (tid, code),
                "Provider": "IntakeQ", "InvitationCode": code, "JoinUrl": "https://telehealth.example.com/join/" + tid}
    if kind == "invitation":
        return {"Id": tid, "StartUrl": "https://telehealth.example.com/start/" + tid,
                "Invitation": "Please join: https://telehealth.example.com/join/%s\nInvitation Code: %s" % (tid, code),
                "Provider": "IntakeQ", "InvitationCode": code}
    if kind == "startonly":
        return {"Id": tid, "StartUrl": "https://zoom.us/s/9%09d?zak=hostonly" % rng.randint(0, 10 ** 9 - 1),
                "Invitation": None, "Provider": "Zoom", "InvitationCode": None}
    raise ValueError(kind)


def meet_link():
    letters = "abcdefghijklmnopqrstuvwxyz"
    p = lambda n: "".join(rng.choice(letters) for _ in range(n))
    return "https://meet.google.com/%s-%s-%s" % (p(3), p(4), p(3))


def zoom_link():
    return "https://zoom.us/j/%010d?pwd=%s" % (rng.randint(0, 10 ** 10 - 1), "%016x" % rng.getrandbits(64))


def base_appointment(client, start_ms, mode="office", status="Confirmed", service=None, practitioner=None):
    service = service or rng.choice(SERVICES[:1] * 5 + SERVICES[3:])
    practitioner = practitioner or rng.choice(PRACTITIONERS)
    created = start_ms - rng.randint(3, 40) * DAY_MS - rng.randint(0, 86_399) * 1000
    created = min(created, NOW1_MS - 3 * DAY_MS - rng.randint(0, 86_399) * 1000)
    modified = min(created + rng.randint(0, 5) * DAY_MS + rng.randint(0, 86_399) * 1000, NOW1_MS - 3_600_000)
    booked_by_client = rng.random() < 0.4
    a = {
        "Id": new_id(),
        "ClientName": client.name,
        "ClientEmail": client.email,
        "ClientPhone": client.phone,
        "ClientDateOfBirth": client.dob,
        "ClientId": client.api_id(),
        "Status": status,
        "StartDate": 0, "EndDate": 0, "Duration": service["Duration"],
        "ServiceName": service["Name"],
        "ServiceId": service["Id"],
        "LocationName": None, "LocationId": None,
        "Price": service["Price"],
        "PractitionerEmail": practitioner["Email"],
        "PractitionerName": practitioner["CompleteName"],
        "PractitionerId": practitioner["Id"],
        "DateCreated": created,
        "IntakeId": ("%08x-4a5b-4c6d-8e7f-%012x" % (rng.getrandbits(32), rng.getrandbits(48)))
        if rng.random() < 0.3 else None,
        "BookedByClient": booked_by_client,
        "CreatedBy": client.name if booked_by_client else rng.choice(["Front Desk", practitioner["CompleteName"]]),
        "AppointmentPackageId": None,
        "AppointmentPackageName": None,
        "StartDateIso": "", "EndDateIso": "", "StartDateLocal": "", "EndDateLocal": "",
        "StartDateLocalFormatted": "",
        "TelehealthInfo": None,
        "ReminderType": rng.choice(["Sms", "Email", "Email", "Voice", "OptOut", None]),
        "InvoiceId": None,
        "InvoiceNumber": None,
        "ClientNote": None,
        "PractitionerNote": None,
        "AttendanceConfirmationResponse": "None",
        "CustomFields": [],
        "SessionStart": None,
        "SessionEnd": None,
        "ExternalClientId": "ledger-client-%04d" % client.cid if rng.random() < 0.2 else None,
        "ExternalPractitionerId": practitioner.get("ExternalPractitionerId"),
        "ExternalServiceId": None,
        "LastModified": modified,
        "PlaceOfService": None,
        "AdditionalClients": [],
        "FullCancellationReason": None,
        "CancellationReasonNote": None,
        "CancellationDate": None,
        "Procedures": [],
    }
    set_times(a, start_ms)
    apply_mode(a, mode)
    if status == "Canceled":
        cancel(a, a["LastModified"])
    if start_ms < NOW1_MS and status == "Confirmed" and rng.random() < 0.5:
        inv = rng.randint(900, 1400)
        a["InvoiceId"] = hexid()
        a["InvoiceNumber"] = inv if rng.random() < 0.7 else str(inv)  # number vs string
        a["Procedures"] = [{"ProcedureCode": rng.choice(["90834", "90837", "90847", "90853"]), "Price": a["Price"],
                            "Quantity": 1, "Units": 1, "Modifiers": []}]
    return a


def apply_mode(a, mode):
    """Where/how the appointment happens. Returns the appointment for chaining."""
    a["TelehealthInfo"] = None
    if mode == "office":
        a["LocationName"], a["LocationId"], a["PlaceOfService"] = "Downtown Office", "1", "11"
    elif mode == "eastside":
        a["LocationName"], a["LocationId"], a["PlaceOfService"] = "Eastside Clinic", "3", "11"
    elif mode == "westside":
        a["LocationName"], a["LocationId"], a["PlaceOfService"] = "Westside Clinic", "5", "11"
    elif mode == "home":
        a["LocationName"], a["LocationId"], a["PlaceOfService"] = "Home Visits", 4, "12"
    elif mode in ("join", "invitation", "startonly"):
        a["LocationName"], a["LocationId"] = "Telehealth", 2  # LocationId as a number
        a["PlaceOfService"] = rng.choice(["02", "10"])
        a["TelehealthInfo"] = telehealth(mode)
    elif mode == "meet-location":
        a["LocationName"], a["LocationId"], a["PlaceOfService"] = "Google Meet " + meet_link(), "2", "10"
    elif mode == "meet-note":
        a["LocationName"], a["LocationId"], a["PlaceOfService"] = "Telehealth", "2", "02"
        a["ClientNote"] = "Video link: " + meet_link() + " (camera on please)"
    elif mode == "zoom-custom":
        a["LocationName"], a["LocationId"], a["PlaceOfService"] = "Telehealth", "2", "10"
        a["CustomFields"] = [{"FieldId": "vid1", "Text": "Video link", "Value": zoom_link()}]
    elif mode == "nopos":
        a["LocationName"], a["LocationId"] = "Downtown Office", 1
        del a["PlaceOfService"]
    else:
        raise ValueError(mode)
    return a


def cancel(a, when_ms, reason=None, note=None):
    a["Status"] = "Canceled"
    a["FullCancellationReason"] = reason or rng.choice(
        ["Client cancelled - illness", "Client cancelled - schedule conflict", "Practitioner unavailable"])
    a["CancellationReasonNote"] = note
    a["CancellationDate"] = iso_z(when_ms)
    a["AttendanceConfirmationResponse"] = rng.choice(["None", "Cancelled"])
    a["LastModified"] = when_ms


def make_sparse(a):
    """List rows omit keys (S-TB: 44 of 49 on list rows)."""
    for k in ("AppointmentPackageId", "AppointmentPackageName", "Procedures", "SessionStart", "SessionEnd"):
        a.pop(k, None)


MODES = ["office"] * 10 + ["eastside"] * 4 + ["home"] * 2 + ["join"] * 5 + ["invitation"] * 2 + ["startonly"] + \
        ["meet-location", "meet-note", "zoom-custom"] + ["nopos"]


def random_status(start_ms):
    r = rng.random()
    if start_ms < NOW1_MS:
        return "Confirmed" if r < 0.74 else "Missed" if r < 0.84 else "Canceled" if r < 0.95 else "Declined"
    return "Confirmed" if r < 0.62 else "WaitingConfirmation" if r < 0.84 else "Canceled" if r < 0.96 else "Declined"


def build_day1():
    appts = []
    named = {}  # trap name -> appointment id
    roster_clients = [c for c in CLIENTS if c.in_roster]
    other_clients = [c for c in CLIENTS if not c.in_roster and c.cid != 5300]

    def add(a, name=None):
        appts.append(a)
        if name:
            named[name] = a["Id"]
        return a

    # Bulk: 225 appointments in [now-85d, now+85d], ~55 % roster clients.
    for i in range(225):
        off = rng.randint(-85, 85)
        start = slot(off)
        client = rng.choice(roster_clients) if rng.random() < 0.55 else rng.choice(other_clients)
        a = base_appointment(client, start, mode=rng.choice(MODES), status=random_status(start))
        if rng.random() < 0.25:
            make_sparse(a)
        add(a)

    # Outside every day's window (never counted): long past and far future.
    for off in (-140, -120, -101, 130, 150):
        add(base_appointment(rng.choice(roster_clients + other_clients), slot(off), mode="office",
                             status="Confirmed"))

    C = BY_ID
    # --- explicit traps (all inside the window unless said otherwise)
    add(base_appointment(C[4101], slot(5), mode="join"), "telehealth_joinurl")
    add(base_appointment(C[4102], slot(6), mode="invitation"), "telehealth_invitation_only")
    add(base_appointment(C[4103], slot(7), mode="startonly"), "telehealth_starturl_only")
    add(base_appointment(C[4106], slot(8), mode="meet-location"), "meet_in_location_name")
    add(base_appointment(C[4107], slot(9), mode="meet-note"), "meet_in_client_note")
    add(base_appointment(C[4108], slot(10), mode="zoom-custom"), "zoom_in_custom_field")
    a = add(base_appointment(C[4111], slot(11), mode="office"), "pos_missing")
    del a["PlaceOfService"]
    a = add(base_appointment(C[4113], slot(12), mode="home"), "pos_12_home")
    a = add(base_appointment(C[4109], slot(3), mode="office"), "client_id_string")  # API sends "4109"
    a = add(base_appointment(C[4105], slot(4), mode="office"), "roster_id_string")  # roster has "4105"
    a = add(base_appointment(C[4114], slot(-2), mode="office", status="Confirmed"), "unknown_status")
    a["Status"] = "Rescheduled"
    a = add(base_appointment(C[4115], slot(-3), mode="office", status="Missed"), "missed")
    a = add(base_appointment(C[4116], slot(13), mode="office", status="Declined"), "declined")
    a = add(base_appointment(C[4118], slot(14), mode="join", status="WaitingConfirmation"), "waiting")
    a = add(base_appointment(C[4120], slot(15), mode="office", status="Canceled"), "canceled")
    # Sparse row with many keys missing.
    a = add(base_appointment(C[4122], slot(16), mode="office", status="WaitingConfirmation"), "sparse_row")
    for k in ("AppointmentPackageId", "AppointmentPackageName", "Procedures", "SessionStart", "SessionEnd",
              "ClientPhone", "ClientDateOfBirth", "IntakeId", "ExternalClientId", "CustomFields",
              "AdditionalClients", "CancellationDate", "ReminderType"):
        a.pop(k, None)
    # Unknown fields must survive in the raw bytes.
    a = add(base_appointment(C[4124], slot(17), mode="join"), "unknown_fields")
    a["RoomBookingId"] = "rb-7781"
    a["TelehealthInfo"]["WaitingRoomEnabled"] = True
    # Escapes and unicode inside strings.
    a = add(base_appointment(C[4112], slot(18), mode="office"), "escapes_unicode")
    a["ClientNote"] = 'Said "see you soon" \\ bring forms\nThanks — ☕ 🙂'
    a["PractitionerNote"] = "Tab\there, slash / and unicode: Zoë"
    # Package (single-GET style) and price as integer text.
    a = add(base_appointment(C[4125], slot(19), mode="eastside", service=SERVICES[1]), "package_couples")
    a["AppointmentPackageId"] = "7e0a5b2c-1d3e-4f50-a6b7-c8d9e0f1a2b3"
    a["AppointmentPackageName"] = "Couples 6-Session Package"
    a["AdditionalClients"] = [{"ClientId": 5205, "ClientName": C[5205].name, "ClientEmail": C[5205].email,
                               "ClientPhone": C[5205].phone, "IntakeId": None}]
    # Group session: primary NOT in roster, additional clients include roster patients (one id as string).
    a = add(base_appointment(C[5203], slot(20), mode="office", service=SERVICES[2]), "group_additional_in_roster")
    a["AdditionalClients"] = [
        {"ClientId": 4121, "ClientName": C[4121].name, "ClientEmail": C[4121].email, "ClientPhone": C[4121].phone,
         "IntakeId": None},
        {"ClientId": "4126", "ClientName": C[4126].name, "ClientEmail": C[4126].email, "ClientPhone": None,
         "IntakeId": None},
        {"ClientId": 5204, "ClientName": C[5204].name, "ClientEmail": C[5204].email, "ClientPhone": None,
         "IntakeId": None},
    ]
    # Group session with nobody from the roster: never recorded.
    a = add(base_appointment(C[5207], slot(21), mode="office", service=SERVICES[2]), "group_no_roster")
    a["AdditionalClients"] = [{"ClientId": 5208, "ClientName": C[5208].name, "ClientEmail": C[5208].email,
                               "ClientPhone": None, "IntakeId": None}]
    # Partial-match trap: Sam Lee (roster) vs Sam Leeds (not in roster).
    add(base_appointment(C[4117], slot(2), mode="join"), "sam_lee_1")
    add(base_appointment(C[4117], slot(-10), mode="office"), "sam_lee_2")
    add(base_appointment(C[5300], slot(2), mode="office"), "sam_leeds_1")
    add(base_appointment(C[5300], slot(9), mode="join"), "sam_leeds_2")
    add(base_appointment(C[5300], slot(-12), mode="office"), "sam_leeds_3")
    # Appointments the timeline will change (roster unless said otherwise).
    add(base_appointment(C[4130], slot(22), mode="office"), "reschedule_d2")
    add(base_appointment(C[4129], slot(-20), mode="join"), "reschedule_d2b")
    add(base_appointment(C[4127], slot(23), mode="office"), "cancel_d2")
    add(base_appointment(C[4110], slot(24), mode="join"), "cancel_d2b")
    add(base_appointment(C[4101], slot(25), mode="office"), "delete_d2")
    add(base_appointment(C[4102], slot(26), mode="office"), "link_added_d2")
    a = add(base_appointment(C[4103], slot(27), mode="join"), "link_changed_d3")
    add(base_appointment(C[4106], slot(28), mode="office"), "location_change_d3")
    add(base_appointment(C[4107], slot(-1), mode="office"), "missed_d3")
    add(base_appointment(C[4108], slot(29), mode="office"), "vanish_d3")  # gone without a deleted entry
    add(base_appointment(C[5210], slot(30), mode="office"), "delete_non_roster_d3")
    a = add(base_appointment(C[4111], slot(31), mode="office"), "format_only_d3")
    a["Price"] = 150.0
    add(base_appointment(C[4113], slot(32), mode="office"), "moved_far_d4")
    add(base_appointment(C[4115], slot(33), mode="office"), "reschedule_d4")
    add(base_appointment(C[4116], slot(34), mode="office"), "cancel_d4")
    add(base_appointment(C[4118], slot(35), mode="office"), "westside_d4")
    add(base_appointment(C[4119], slot(36), mode="invitation"), "link_via_invitation_d4")
    add(base_appointment(C[5211], slot(37), mode="office"), "non_roster_change_d2")
    add(base_appointment(C[4120], slot(38), mode="office"), "in_deleted_d1_never_seen_placeholder")

    # Deleted before day 1 (never recorded by any sync): a roster appointment and a non-roster one.
    deleted = []
    for cid, off, name in ((4120, 39, "deleted_before_day1"), (5212, 40, "deleted_before_day1_non_roster")):
        d = base_appointment(C[cid], slot(off), mode="office")
        d["LastModified"] = NOW1_MS - 2 * DAY_MS
        deleted.append(d)
        named[name] = d["Id"]
    # The placeholder is an ordinary roster appointment; keep it (name only documents it).
    named["roster_plain"] = named.pop("in_deleted_d1_never_seen_placeholder")
    return appts, deleted, named


# ---------------------------------------------------------------- timeline
def find(appts, aid):
    for a in appts:
        if a["Id"] == aid:
            return a
    raise KeyError(aid)


def touch(a, day, hours_before=2):
    a["LastModified"] = ms(now_of(day)) - hours_before * 3_600_000 - rng.randint(0, 3_599) * 1000


def move(a, day, new_start_ms):
    set_times(a, new_start_ms)
    touch(a, day)


def delete(state, aid, day):
    a = find(state["appointments"], aid)
    state["appointments"].remove(a)
    a = copy.deepcopy(a)
    touch(a, day, hours_before=5)
    state["deleted"].append(a)


def timeline():
    appts, deleted, N = build_day1()
    states = {1: {"appointments": appts, "deleted": deleted}}
    C = BY_ID
    roster_clients = [c for c in CLIENTS if c.in_roster]

    # Day 2
    s = copy.deepcopy(states[1])
    a = base_appointment(C[4104], slot(41), mode="join")
    a["DateCreated"] = a["LastModified"] = ms(now_of(2)) - 6 * 3_600_000
    s["appointments"].append(a); N["new_d2_a"] = a["Id"]
    a = base_appointment(C[4112], slot(3), mode="home")
    a["DateCreated"] = a["LastModified"] = ms(now_of(2)) - 5 * 3_600_000
    s["appointments"].append(a); N["new_d2_b"] = a["Id"]
    a = base_appointment(C[5213], slot(4), mode="office")
    a["DateCreated"] = a["LastModified"] = ms(now_of(2)) - 4 * 3_600_000
    s["appointments"].append(a); N["new_d2_non_roster"] = a["Id"]
    a = find(s["appointments"], N["reschedule_d2"]); move(a, 2, a["StartDate"] + 2 * DAY_MS + 3_600_000)
    a = find(s["appointments"], N["reschedule_d2b"]); move(a, 2, a["StartDate"] + 7 * DAY_MS)
    a = find(s["appointments"], N["cancel_d2"]); cancel(a, ms(now_of(2)) - 3 * 3_600_000, note="Will rebook.")
    a = find(s["appointments"], N["cancel_d2b"]); cancel(a, ms(now_of(2)) - 1 * 3_600_000)
    delete(s, N["delete_d2"], 2)
    a = find(s["appointments"], N["link_added_d2"]); apply_mode(a, "join"); touch(a, 2)
    a = find(s["appointments"], N["non_roster_change_d2"]); move(a, 2, a["StartDate"] + DAY_MS)
    states[2] = s

    # Day 3
    s = copy.deepcopy(states[2])
    a = find(s["appointments"], N["link_changed_d3"])
    tid = "tv-%010x" % rng.getrandbits(40)
    a["TelehealthInfo"] = telehealth("join", tid); touch(a, 3)
    a = find(s["appointments"], N["location_change_d3"]); apply_mode(a, "eastside"); touch(a, 3)
    a = find(s["appointments"], N["missed_d3"]); a["Status"] = "Missed"; touch(a, 3)
    s["appointments"].remove(find(s["appointments"], N["vanish_d3"]))  # no deleted entry: the sync must 404 it
    delete(s, N["delete_non_roster_d3"], 3)
    # Formatting-only change: Price 150.0 -> 150 and key order moved; LastModified unchanged.
    a = find(s["appointments"], N["format_only_d3"])
    a["Price"] = 150
    lm = a.pop("LastModified"); items = list(a.items()); items.insert(1, ("LastModified", lm))
    idx = s["appointments"].index(a); s["appointments"][idx] = dict(items)
    for cid, off, mode in ((4121, 42, "office"), (4126, 43, "zoom-custom")):
        a = base_appointment(C[cid], slot(off), mode=mode)
        a["DateCreated"] = a["LastModified"] = ms(now_of(3)) - 7 * 3_600_000
        s["appointments"].append(a); N["new_d3_%d" % cid] = a["Id"]
    states[3] = s

    # Day 4
    s = copy.deepcopy(states[3])
    s["settings_day"] = 4
    a = find(s["appointments"], N["moved_far_d4"]); move(a, 4, ms(now_of(4)) + 200 * DAY_MS)
    a = find(s["appointments"], N["reschedule_d4"]); move(a, 4, a["StartDate"] - 3 * DAY_MS)
    a = find(s["appointments"], N["cancel_d4"]); cancel(a, ms(now_of(4)) - 2 * 3_600_000)
    a = find(s["appointments"], N["westside_d4"]); apply_mode(a, "westside"); touch(a, 4)
    a = find(s["appointments"], N["link_via_invitation_d4"])
    a["TelehealthInfo"]["Invitation"] = "New link: https://telehealth.example.com/join/%s\nInvitation Code: 000111" \
                                        % a["TelehealthInfo"]["Id"]
    touch(a, 4)
    a = base_appointment(C[4128], slot(44), mode="meet-note")
    a["DateCreated"] = a["LastModified"] = ms(now_of(4)) - 3 * 3_600_000
    s["appointments"].append(a); N["new_d4"] = a["Id"]
    # A new booking for Sam Leeds (not in roster) — only a naive client= search would pick it up.
    a = base_appointment(C[5300], slot(45), mode="office")
    a["DateCreated"] = a["LastModified"] = ms(now_of(4)) - 3 * 3_600_000
    s["appointments"].append(a); N["sam_leeds_new_d4"] = a["Id"]
    states[4] = s

    # Day 5 = day 4 unchanged (idempotence).
    states[5] = copy.deepcopy(states[4])
    return states, N


# ---------------------------------------------------------------- expected results
def in_scope(a):
    ids = [a.get("ClientId")] + [c.get("ClientId") for c in (a.get("AdditionalClients") or [])]
    return any(i is not None and str(i) in ROSTER_IDS for i in ids)


def norm(a):
    """Compare by value: key order, 150 vs 150.0 and absent vs null do not matter (as the Swift side)."""
    return {k: v for k, v in a.items() if v is not None}


def expected(states):
    recorded = {}  # id -> last recorded object
    removed = set()
    out = []
    for day in range(1, DAYS + 1):
        s = states[day]
        now = ms(now_of(day))
        lo, hi = now - 90 * DAY_MS, now + 90 * DAY_MS
        live = {a["Id"]: a for a in s["appointments"]}
        deleted_ids = {a["Id"] for a in s["deleted"]}
        crawl = {a["Id"]: a for a in s["appointments"] if lo <= a["StartDate"] <= hi and in_scope(a)}
        new, updated, unchanged, gone = [], [], [], []
        for aid, a in crawl.items():
            if aid not in recorded:
                new.append(aid)
            elif norm(a) != norm(recorded[aid]):
                updated.append(aid)
            else:
                unchanged.append(aid)
        for aid in list(recorded):
            if aid in crawl or aid in removed:
                continue
            if aid in deleted_ids or aid not in live:
                gone.append(aid)
            else:  # looked up by id: returned with a start outside the window
                a = live[aid]
                if in_scope(a) and norm(a) != norm(recorded[aid]):
                    updated.append(aid)
                    recorded[aid] = a
        for aid in new + [i for i in updated if i in crawl]:
            recorded[aid] = crawl[aid]
        removed.update(gone)
        ids = {"new": sorted(new), "updated": sorted(updated), "unchanged": sorted(unchanged),
               "removed": sorted(gone)}
        out.append({"day": day, "now": iso_now(now_of(day)),
                    "window": {"start": iso_now(now_of(day) - dt.timedelta(days=90)),
                               "end": iso_now(now_of(day) + dt.timedelta(days=90))},
                    "counts": {k: len(v) for k, v in ids.items()}, "ids": ids})
    return out


def check(states):
    """Invariants the tests rely on."""
    for day, s in states.items():
        now = now_of(day)
        lo = (now - dt.timedelta(days=91)).strftime("%Y-%m-%d")
        hi = (now + dt.timedelta(days=91)).strftime("%Y-%m-%d")
        n = sum(1 for a in s["appointments"]
                if lo <= dt.datetime.fromtimestamp(a["StartDate"] / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d")
                <= hi)
        assert 250 <= n < 300, (day, n)  # the window crawl is 3 pages: 100, 100, short
        ids = [a["Id"] for a in s["appointments"]] + [a["Id"] for a in s["deleted"]]
        assert len(ids) == len(set(ids)), day
        statuses = {a["Status"] for a in s["appointments"]}
        assert {"Confirmed", "WaitingConfirmation", "Canceled", "Declined", "Missed", "Rescheduled"} <= statuses


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")



README_HEAD = """# Fixtures

Generated by `python3 tools/make_fixtures.py` (seeded, deterministic; Python 3 stdlib only). Do not edit by
hand: change the script and re-run it. All names, emails, phone numbers and links are invented.

## Files

- `roster.json` — DESIGN.md roster format: the practice's `timezone` (America/Denver), 3 organisations (`fsh`, `rrc`, `hwc`), 30 patients with
  `intakeq_client_id` 4101–4130 (numbers, and strings for 4105, 4114, 4123, 4127), emails on all but three
  (4104, 4119, 4128), and a practitioner → provider mapping that lacks Alex Moreno (`64b7aa00000000000000d1ce`).
- `practice/day-01.json` … `day-05.json` — the FULL practice state on each day:
  `{"day", "now", "settings", "appointments", "deleted"}`. `now` is 2026-11-20T10:00:00.000Z on day 1, +1 day
  each. `deleted` holds appointments deleted recently (what `deletedOnly=true` returns).
- `practice/expected.json` — per day, the distinct appointment ids (and counts) a full `automated_daily` sync
  of the whole roster at that day's `now` must record as `new`, `updated`, `unchanged`, `removed`; plus
  `traps`: name → appointment id for every case below.

## Rules used for expected.json

- Window: `[now − 90 d, now + 90 d]`, exact instants on `StartDate` (epoch ms). The API is queried with whole
  days widened by one day on each side; every day's window query returns 3 pages (100, 100, short).
- In scope: `ClientId` or any `AdditionalClients[].ClientId` is a roster patient (compare as strings:
  `4109` = `"4109"`). Nothing else is ever recorded — not by name, not by email.
- `new`: in-scope, in-window ids not recorded by an earlier day's sync.
- `updated`: previously recorded ids whose object changed by value (any key; key order, `150` vs `150.0` and
  absent-vs-null are *not* changes), in scope — including one that moved out of the window (the sync no longer
  sees it in the crawl, looks it up by id, gets it back with a far start).
- `removed`: previously recorded ids that are now in `deleted` (the `deletedOnly` poll) or no longer returned
  at all (the lookup by id answers 404). Counted once.
- `unchanged`: the rest of the in-window, in-scope ids.
- No base appointment lies within 5 days of a window edge, so nothing drifts in or out of the window by the
  passage of days alone. Five appointments lie outside every day's window (−140 … −101 d, +130 d, +150 d).

## Counts

| day | now | new | updated | unchanged | removed |
| --- | --- | --- | --- | --- | --- |
"""


TIMELINE = """

## Timeline

- **Day 1** — the initial state: ~275 appointments (all five documented statuses plus one `Rescheduled`),
  2 already in `deleted` (never recorded: `deleted_before_day1`, `deleted_before_day1_non_roster`).
- **Day 2** — new bookings `new_d2_a`, `new_d2_b` (roster) and `new_d2_non_roster` (never recorded);
  reschedules `reschedule_d2` (+2 d 1 h) and `reschedule_d2b` (+7 d), StartDate/EndDate/Iso/Local and
  LastModified changed; cancellations `cancel_d2`, `cancel_d2b` (Status `Canceled`, FullCancellationReason,
  CancellationReasonNote, CancellationDate, AttendanceConfirmationResponse); deletion `delete_d2` (moved to
  `deleted`); link added `link_added_d2` (office → IntakeQ telehealth with JoinUrl); `non_roster_change_d2`
  rescheduled (out of scope: not counted).
- **Day 3** — link changed `link_changed_d3` (new TelehealthInfo: JoinUrl, StartUrl, Invitation);
  location change `location_change_d3` (Downtown Office → Eastside Clinic); `missed_d3` marked Missed;
  `vanish_d3` disappears without a `deleted` entry (the sync must look it up: 404 → removed);
  `delete_non_roster_d3` deleted (out of scope: not counted); formatting-only change `format_only_d3`
  (`"Price":150.0` → `150`, key order changed, LastModified unchanged → **unchanged**); new bookings
  `new_d3_4121`, `new_d3_4126` (the latter with a Zoom link in a custom field).
- **Day 4** — settings gain location 5 "Westside Clinic"; `westside_d4` moves there; `moved_far_d4` moves to
  now + 200 days (leaves the window → **updated** via lookup by id); `reschedule_d4` (−3 d); `cancel_d4`;
  `link_via_invitation_d4` gets a new Invitation text; new booking `new_d4` (Meet link in ClientNote);
  `sam_leeds_new_d4` booked for Sam Leeds (not in the roster; only a naive `client=` search picks it up).
- **Day 5** — identical to day 4 (idempotence: everything unchanged). `moved_far_d4` is out of the window and
  unchanged, so it counts in no category (a sync that looks it up again finds it unchanged).

## Traps (ids in `expected.json` → `traps`)

- Telehealth: `telehealth_joinurl` (JoinUrl), `telehealth_invitation_only` (URL only inside Invitation),
  `telehealth_starturl_only` (only the host StartUrl — must never become the meeting URL),
  `meet_in_location_name`, `meet_in_client_note`, `zoom_in_custom_field` (TelehealthInfo null, link elsewhere).
  The bulk appointments mix the same variants.
- PlaceOfService `02`/`10` (telehealth), `11`, `12` (`pos_12_home`), missing key (`pos_missing`, some bulk rows).
- Ids: `client_id_string` (API sends ClientId `"4109"`, roster has 4109); `roster_id_string` (roster has
  `"4105"`, API sends 4105); LocationId number (Telehealth 2, Home Visits 4) vs string ("1", "3");
  InvoiceNumber number or string on invoiced past appointments.
- Statuses: `unknown_status` (`Rescheduled`), `missed`, `declined`, `waiting`, `canceled`.
- Shapes: `sparse_row` (13 keys missing), ~25 % of bulk rows lack the package/session/procedure keys,
  `unknown_fields` (extra `RoomBookingId` and `TelehealthInfo.WaitingRoomEnabled`: must survive in raw bytes),
  `escapes_unicode` (quotes, backslash, newline, tab, emoji inside strings), `package_couples` (package keys).
- Groups: `group_additional_in_roster` (primary 5203 not in the roster; AdditionalClients 4121, `"4126"` are →
  in scope), `group_no_roster` (nobody in the roster → never recorded), `package_couples` (roster primary with a
  non-roster additional client).
- Partial match: "Sam Lee" (4117, sam.lee@example.org, roster: `sam_lee_1`, `sam_lee_2`) vs "Sam Leeds" (5300,
  sam.leeds@example.org, not in roster: `sam_leeds_1..3`, `sam_leeds_new_d4`). `client=Sam Lee` or
  `client=sam.lee` returns both; filter by ClientId.
- Clients not in the roster (5201–5216, 5300): about 45 % of all appointments; never recorded.
- Local time (the roster's `"timezone": "America/Denver"`): `evening_nov30_a` (Nov 30 5:30 pm MST =
  Dec 1 00:30Z), `evening_nov30_b` (Nov 30 7:00 pm MST = Dec 1 02:00Z), `evening_dec1` (Dec 1 6:30 pm MST =
  Dec 2 01:30Z): the UTC day Dec 1 holds the first two, the Denver day Dec 1 only the third. Around the
  Nov 1 2026 fall-back: `dst_nov1_mdt` (1:30 am MDT = 07:30Z), `dst_nov1_mst` (1:30 am MST = 08:30Z, the
  same wall-clock time an hour later), `dst_nov1_late` (Nov 1 11:30 pm MST = Nov 2 06:30Z).
""".lstrip("\n")


def write_readme(exp, names):
    lines = [README_HEAD]
    for d in exp:
        c = d["counts"]
        lines.append("| %d | %s | %d | %d | %d | %d |\n" % (d["day"], d["now"], c["new"], c["updated"],
                                                          c["unchanged"], c["removed"]))
    lines.append("\n" + TIMELINE)
    lines.append("\n## Trap ids\n\n| name | appointment id |\n| --- | --- |\n")
    for k in sorted(names):
        lines.append("| %s | `%s` |\n" % (k, names[k]))
    with open(os.path.join(ROOT, "README.md"), "w", encoding="utf-8") as f:
        f.write("".join(lines))


def add_local_time_cases(states, names):
    """Appointments at the edges of the practice's local day (America/Denver) and around the
    2026-11-01 fall-back change, present on every day. A separate random stream and id prefix, so
    every other fixture stays byte-identical."""
    global rng
    saved, rng = rng, random.Random(SEED + 14)
    cases = [
        # (name, client, UTC start, mode, status)
        ("evening_nov30_a", 4101, dt.datetime(2026, 12, 1, 0, 30, tzinfo=dt.timezone.utc), "join", "Confirmed"),
        ("evening_nov30_b", 4104, dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.timezone.utc), "office", "Confirmed"),
        ("evening_dec1", 4107, dt.datetime(2026, 12, 2, 1, 30, tzinfo=dt.timezone.utc), "join", "WaitingConfirmation"),
        ("dst_nov1_mdt", 4110, dt.datetime(2026, 11, 1, 7, 30, tzinfo=dt.timezone.utc), "office", "Confirmed"),
        ("dst_nov1_mst", 4113, dt.datetime(2026, 11, 1, 8, 30, tzinfo=dt.timezone.utc), "office", "Missed"),
        ("dst_nov1_late", 4116, dt.datetime(2026, 11, 2, 6, 30, tzinfo=dt.timezone.utc), "join", "Confirmed"),
    ]
    made = []
    for n, (name, cid, start, mode, status) in enumerate(cases):
        a = base_appointment(BY_ID[cid], ms(start), mode=mode, status=status)
        a["Id"] = "6a3e%08x%012x" % (0x2000 + n, rng.getrandbits(48))
        names[name] = a["Id"]
        made.append(a)
    rng = saved
    for day in states:
        states[day]["appointments"].extend(copy.deepcopy(made))


def main():
    states, names = timeline()
    add_local_time_cases(states, names)
    check(states)
    os.makedirs(os.path.join(ROOT, "practice"), exist_ok=True)
    write_json(os.path.join(ROOT, "roster.json"), roster())
    for day in range(1, DAYS + 1):
        s = states[day]
        doc = {"day": day, "now": iso_now(now_of(day)), "settings": settings(s.get("settings_day", day)),
               "appointments": s["appointments"], "deleted": s["deleted"]}
        write_json(os.path.join(ROOT, "practice", "day-%02d.json" % day), doc)
    exp = expected(states)
    write_json(os.path.join(ROOT, "practice", "expected.json"),
               {"rules": "window [now-90d, now+90d] on StartDate (exact instants); in scope = ClientId or any "
                         "AdditionalClients[].ClientId in the roster; counts are distinct appointment ids",
                "traps": names, "days": exp})
    write_readme(exp, names)
    for d in exp:
        print("day %d: %s" % (d["day"], d["counts"]))


if __name__ == "__main__":
    main()
