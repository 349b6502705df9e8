"""Caps on the work one message can cause while it is parsed.

Intake parses every message before routing it, so a hostile message must not be able to
make that take long: each cap below bounds one kind of work. Going past a cap is not an
error; the parser keeps what fits and records a defect on the email (``ParsedEmail.defects``)
naming the cap. The README's "Intake channels" section lists them.
"""

from __future__ import annotations

# To and Cc addresses considered, together (first ones kept). Also the cap per From/Reply-To.
MAX_RECIPIENTS = 500

# Message-IDs considered per threading header: the newest (last) References, the first
# In-Reply-To ids. Threading looks up each one, so this bounds the lookups too.
MAX_THREAD_IDS = 100

# Characters of one header value copied into ``ParsedEmail.headers`` (cut with an ellipsis).
# It is also the most the stdlib's structured header parser is given at once: that parser
# copies the rest of the value after every token, so its time grows with the square of it.
HEADER_VALUE_LIMIT = 8_192

# Characters of all header values together in ``ParsedEmail.headers``; further headers are
# left out (the ones intake rules read are copied first, so they are never crowded out).
HEADERS_TOTAL_LIMIT = 65_536

# MIME nesting levels read; a deeper part ends the message's body where it starts.
MAX_MIME_DEPTH = 30

# MIME parts (containers and leaves) read; the message's body ends before part 101.
# Each part costs a few stdlib header parses, so this bounds the work of the body walk.
MAX_MIME_PARTS = 100

# Characters of one Content-* header field read, in every part. The stdlib parses these
# on every access and its parameter parser grows with the square of their length; real
# ones (type, charset, boundary, a long RFC 2231 file name) stay well below this.
MIME_HEADER_LIMIT = 1_024

# Case reference tokens ([CASE-n]) considered in a subject (first ones kept).
MAX_CASE_TOKENS = 20

# Characters of one address (display name included) parsed; longer ones are skipped.
# RFC 5322 lines are at most 998 characters, so no real address is longer.
MAX_ADDRESS_CHARS = 998

# Internal: addresses are handed to the stdlib parser in batches of about this many
# characters, which keeps its quadratic cost per batch small and the total linear.
ADDRESS_BATCH_CHARS = 2_048

# Characters of address text per message that is unusual enough to need the stdlib's
# full parser (groups, comments, odd quoting); the rest is salvaged token by token.
# Common forms ("Name <addr>", "addr", "addr (Name)") are read without it.
STRUCTURED_ADDRESS_BUDGET = 4_096

# Internal: address header values up to this long are copied into ``headers`` as the
# stdlib renders them; longer ones are copied as decoded text (the parse is quadratic).
STRUCTURED_COPY_LIMIT = 512
