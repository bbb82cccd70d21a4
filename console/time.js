// Instants shown and entered in a chosen IANA time zone, with nothing but Intl.

const formatters = new Map();

function partsFormatter(zone) {
  let formatter = formatters.get(zone);
  if (!formatter) {
    formatter = new Intl.DateTimeFormat("en-US", {
      timeZone: zone, hourCycle: "h23",
      year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
    formatters.set(zone, formatter);
  }
  return formatter;
}

// The wall-clock fields of an instant (ms since the epoch) in `zone`.
export function wallClock(ms, zone) {
  const fields = {};
  for (const part of partsFormatter(zone).formatToParts(new Date(ms))) {
    if (part.type !== "literal") fields[part.type] = Number(part.value);
  }
  return fields;
}

// How far `zone` is ahead of UTC at the instant `ms`, in ms.
export function offsetAt(ms, zone) {
  const f = wallClock(ms, zone);
  const asUtc = Date.UTC(f.year, f.month - 1, f.day, f.hour, f.minute, f.second);
  return asUtc - Math.floor(ms / 1000) * 1000;
}

// A datetime-local value ("2026-11-30T10:00" or with seconds) read in `zone` -> ms since the epoch.
// (The offset is guessed at the wall time read as UTC, then taken at the instant that gives.)
export function zonedToEpoch(value, zone) {
  const match = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?/.exec(value);
  if (!match) return NaN;
  const [, y, mo, d, h, mi, s] = match.map(Number);
  const wall = Date.UTC(y, mo - 1, d, h, mi, s || 0);
  return wall - offsetAt(wall - offsetAt(wall, zone), zone);
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

// ms since the epoch -> a datetime-local value in `zone`.
export function epochToInput(ms, zone) {
  const f = wallClock(ms, zone);
  return `${f.year}-${pad(f.month)}-${pad(f.day)}T${pad(f.hour)}:${pad(f.minute)}:${pad(f.second)}`;
}

// An RFC 3339 timestamp (any offset) -> "2026-11-30 10:04:05.123" in `zone`.
export function formatInstant(text, zone, { millis = true } = {}) {
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) return text ?? "";
  const f = wallClock(ms, zone);
  const base = `${f.year}-${pad(f.month)}-${pad(f.day)} ${pad(f.hour)}:${pad(f.minute)}:${pad(f.second)}`;
  return millis ? `${base}.${pad(((ms % 1000) + 1000) % 1000, 3)}` : base;
}

// "1h", "30m", "7d" -> ms.
export function durationMs(text) {
  const match = /^(\d+)([smhd])$/.exec(text);
  if (!match) return NaN;
  return Number(match[1]) * { s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7 }[match[2]];
}

export function browserZone() {
  return currentName(Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC");
}

// ICU (so Chromium) still lists some zones by their old names; people look for the new ones.
const RENAMED = {
  "Asia/Calcutta": "Asia/Kolkata",
  "Asia/Katmandu": "Asia/Kathmandu",
  "Asia/Rangoon": "Asia/Yangon",
  "Asia/Saigon": "Asia/Ho_Chi_Minh",
  "Atlantic/Faeroe": "Atlantic/Faroe",
  "Europe/Kiev": "Europe/Kyiv",
  "America/Godthab": "America/Nuuk",
  "Pacific/Enderbury": "Pacific/Kanton",
};

export function knownZones() {
  const listed = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  const zones = [...new Set(listed.map((zone) => RENAMED[zone] ?? zone))].sort();
  return zones.includes("UTC") ? zones : ["UTC", ...zones];
}

// A zone name as the picker lists it (a stored old name becomes its new one).
export function currentName(zone) {
  return RENAMED[zone] ?? zone;
}
