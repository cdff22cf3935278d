"""The sliding-window counter both ratelimit providers run (memory in Python, Redis in Lua).

A key's window of ``w`` seconds is counted in two fixed buckets aligned on
multiples of ``w``: the current one and the previous one. The previous
bucket's count is weighted by how much of it the sliding window still
covers (Cloudflare's estimate), so a check is O(1) in time and space
whatever the limit — the moving window it replaces kept one entry per hit
and scanned them. Two refinements keep it exact where an estimate would be
wrong:

- each bucket also remembers its last hit's time: once that is older than
  ``w``, the bucket counts for nothing (a single hit is forgotten exactly
  ``w`` after it was made — the jobs login throttle waits on this);
- ``reset_after`` is solved from the same formula (when the count will have
  dropped far enough), not guessed.

The estimate can admit more than ``limit`` hits in some span of ``w``
seconds when the previous bucket's hits were bunched at its end (at most
``2 * limit`` in the worst case), never more than ``limit`` within one
bucket. :data:`LUA` is the same algorithm for Redis, kept beside the Python
so the two are read (and changed) together; ``tests/plugins/protection``
runs one contract against both.
"""

from __future__ import annotations

import math

import attrs

from plugboard.providers.ratelimit import WindowState

#: Slack for float comparisons: a count that is the limit up to rounding is the limit.
EPSILON = 1e-9


@attrs.define(slots=True)
class Counter:
    """One key's two buckets. ``bucket`` is ``floor(time / window)`` of the current one."""

    window: float
    bucket: int = 0
    current: int = 0
    current_last: float = 0.0
    previous: int = 0
    previous_last: float = 0.0

    def roll(self, now: float) -> None:
        """Move the buckets on to the one ``now`` falls in."""
        bucket = math.floor(now / self.window)
        if bucket == self.bucket:
            return
        if bucket == self.bucket + 1:
            self.previous, self.previous_last = self.current, self.current_last
        else:
            self.previous, self.previous_last = 0, 0.0
        self.bucket, self.current, self.current_last = bucket, 0, 0.0

    def count(self, now: float) -> float:
        """Hits in the window ending ``now`` (call :meth:`roll` first)."""
        if not self.previous or now >= self.previous_last + self.window:
            return float(self.current)
        start = self.bucket * self.window
        return self.current + self.previous * (1.0 - (now - start) / self.window)

    def free_at(self, most: float, now: float) -> float:
        """The earliest time the count is at most ``most`` (no further hits assumed)."""
        w = self.window
        end = (self.bucket + 1) * w
        if self.current > most + EPSILON:
            # Only once this bucket is the previous one does it decay.
            return min(end + w * (1.0 - most / self.current), self.current_last + w)
        if self.count(now) <= most + EPSILON:
            return now
        room = most - self.current
        start = self.bucket * w
        return min(start + w * (1.0 - room / self.previous), self.previous_last + w)

    def state(self, allowed: bool, limit: int, now: float) -> WindowState:
        count = self.count(now)
        remaining = max(math.floor(limit - count + EPSILON), 0)
        if allowed:
            # ``t`` of the RateLimit header: until every hit counted now has left the window.
            reset_after = self.free_at(0, now) - now
        else:
            # Retry-After: until one more hit fits.
            reset_after = self.free_at(limit - 1, now) - now
        return WindowState(allowed=allowed, remaining=remaining, reset_after=max(reset_after, 0.0))

    def hit(self, limit: int, cost: int, now: float) -> WindowState:
        """Count ``cost`` hits if they fit under ``limit``; the state after."""
        self.roll(now)
        count = self.count(now) + cost
        if cost > limit or count > limit + EPSILON:
            return self.state(False, limit, now)
        self.current += cost
        self.current_last = now
        if not cost:
            return self.state(True, limit, now)
        # What state(True, ...) works out, without counting again: the hit
        # just counted is the last to leave the window, a window from now.
        return WindowState(allowed=True, remaining=max(math.floor(limit - count + EPSILON), 0), reset_after=self.window)

    def peek(self, limit: int, now: float) -> WindowState:
        """The state without counting: ``allowed`` says whether one more hit would fit."""
        self.roll(now)
        return self.state(self.count(now) + 1 <= limit + EPSILON, limit, now)

    @property
    def expires_after(self) -> float:
        """Seconds after the last write when the counter is certainly empty."""
        return 2 * self.window


# KEYS[1]: the counter (a hash: b, c, cl, p, pl). ARGV: limit, window (ms),
# cost (0: only look), and optionally now (ms; tests step time with it).
# Returns {allowed (0/1), remaining, reset_after (ms)}. Times are otherwise
# Redis' own (TIME), so instances with skewed clocks agree.
# Lua numbers are doubles; the hash stores them as strings.
LUA = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local w = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local bucket = math.floor(now / w)
local h = redis.call('HMGET', key, 'b', 'c', 'cl', 'p', 'pl')
local b = tonumber(h[1])
local c, cl, p, pl = tonumber(h[2]) or 0, tonumber(h[3]) or 0, tonumber(h[4]) or 0, tonumber(h[5]) or 0
if b == nil then
  c, cl, p, pl = 0, 0, 0, 0
elseif bucket == b + 1 then
  p, pl, c, cl = c, cl, 0, 0
elseif bucket ~= b then
  c, cl, p, pl = 0, 0, 0, 0
end
local eps = 1e-9
local function count(at)
  if p == 0 or at >= pl + w then return c end
  return c + p * (1 - (at - bucket * w) / w)
end
local function free_at(most)
  local e = (bucket + 1) * w
  if c > most + eps then
    return math.min(e + w * (1 - most / c), cl + w)
  end
  if count(now) <= most + eps then return now end
  return math.min(bucket * w + w * (1 - (most - c) / p), pl + w)
end
local allowed = 0
if cost == 0 then
  if count(now) + 1 <= limit + eps then allowed = 1 end
elseif cost <= limit and count(now) + cost <= limit + eps then
  allowed = 1
  c = c + cost
  cl = now
  redis.call('HSET', key, 'b', bucket, 'c', c, 'cl', cl, 'p', p, 'pl', pl)
  redis.call('PEXPIRE', key, 2 * w)
end
local remaining = math.max(math.floor(limit - count(now) + eps), 0)
local reset
if allowed == 1 then
  reset = free_at(0) - now
else
  reset = free_at(limit - 1) - now
end
return {allowed, remaining, math.max(math.ceil(reset), 0)}
"""
