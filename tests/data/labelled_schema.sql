-- Labelled test schema for measuring the precision and recall of `discover`.
--
-- Eight tables that look like the CRM, KYC, billing, web, support and audit tables of a
-- small SaaS business. Every table reaches `labelled.contacts` (the data subject) through
-- real foreign keys. The expected category of every column is in `labelled_schema.labels`
-- next to this file; keep the two files in step.
--
-- All data is deterministic (generate_series, arithmetic, md5), so reruns give identical
-- rows. Contact data uses reserved or fictional ranges wherever they exist: example.com/
-- .org/.net addresses, Ofcom drama numbers (020 7946 0xxx, 07700 900xxx, 01632 960xxx, ...),
-- US 555-01xx numbers, IPv4 documentation nets (192.0.2/24, 198.51.100/24, 203.0.113/24) and
-- IPv6 2001:db8::/32. IBANs pass the mod-97 check and card numbers pass Luhn.
--
-- Written for PostgreSQL 15 with a UTF8 database; runnable in one go (batch_execute / psql -f).

DROP SCHEMA IF EXISTS labelled CASCADE;
CREATE SCHEMA labelled;

-- ---------------------------------------------------------------------------------------
-- CRM: one row per person. Column names are a mix of snake_case, abbreviations and the
-- camelCase an ORM left behind.
-- ---------------------------------------------------------------------------------------
CREATE TABLE labelled.contacts (
    id                 bigint PRIMARY KEY,
    email              text NOT NULL UNIQUE,
    "firstName"        text,
    "lastName"         text,
    phone              text,
    "homePhone"        text,
    "dateOfBirth"      date,
    addr               text,
    city               text,
    zip                text,
    country_code       text NOT NULL,
    locale             text NOT NULL,
    last_login_ip      text,
    email_verified     boolean NOT NULL DEFAULT false,
    email_opt_in       boolean NOT NULL DEFAULT false,
    phone_verified_at  timestamptz,
    address_count      integer NOT NULL DEFAULT 1,
    plan_tier          text NOT NULL,
    notes              text,
    created_at         timestamptz NOT NULL
);

-- KYC: identity checks run on US customers before they may pay by invoice.
CREATE TABLE labelled.identity_checks (
    check_id     bigint PRIMARY KEY,
    contact_id   bigint NOT NULL REFERENCES labelled.contacts (id),
    fname        text,
    lname        text,
    dob          text,
    ssn          varchar(11),
    passport_no  varchar(9),
    mob          text,
    status       text NOT NULL,
    checked_at   timestamptz NOT NULL
);

-- Billing: one profile per paying contact.
CREATE TABLE labelled.billing_profiles (
    billing_profile_id     bigint PRIMARY KEY,
    contact_id             bigint NOT NULL REFERENCES labelled.contacts (id),
    billing_name           text,
    contact_email          text,
    tel                    text,
    billing_address        text,
    "billingAddressLine2"  text,
    billing_city           text,
    postal_code            text,
    shipping_address       text,
    country_code           text NOT NULL,
    iban                   varchar(42),
    card_number            varchar(23),
    currency               text NOT NULL
);

-- Invoices reach the contact only through their billing profile.
CREATE TABLE labelled.invoices (
    invoice_id          bigint PRIMARY KEY,
    billing_profile_id  bigint NOT NULL REFERENCES labelled.billing_profiles (billing_profile_id),
    product_name        text NOT NULL,
    quantity            integer NOT NULL,
    amount              numeric(12, 2) NOT NULL,
    currency            text NOT NULL,
    status              text NOT NULL,
    file_name           text,
    recipient_email     text,
    comment             text,
    issued_at           timestamptz NOT NULL
);

-- Web/app sessions.
CREATE TABLE labelled.web_sessions (
    id               bigint PRIMARY KEY,
    contact_id       bigint NOT NULL REFERENCES labelled.contacts (id),
    session_uuid     uuid NOT NULL,
    ip_addr          text,
    user_agent       text,
    ip_rule_id       integer NOT NULL,
    referrer_domain  text,
    phone_model      text,
    session_count    integer NOT NULL,
    is_active        boolean NOT NULL,
    started_at       timestamptz NOT NULL
);

-- Support desk: tickets and the messages on them.
CREATE TABLE labelled.support_tickets (
    ticket_id      bigint PRIMARY KEY,
    contact_id     bigint NOT NULL REFERENCES labelled.contacts (id),
    status         text NOT NULL,
    priority       integer NOT NULL,
    description    text,
    home_tel       text,
    internal_note  text,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);

-- Messages reach the contact only through their ticket.
CREATE TABLE labelled.support_messages (
    message_id    bigint PRIMARY KEY,
    ticket_id     bigint NOT NULL REFERENCES labelled.support_tickets (ticket_id),
    sender_name   text,
    sender_email  text,
    body          text,
    file_name     text,
    sent_at       timestamptz NOT NULL
);

-- Audit/event log.
CREATE TABLE labelled.events (
    event_id      bigint PRIMARY KEY,
    contact_id    bigint NOT NULL REFERENCES labelled.contacts (id),
    event_kind    text NOT NULL,
    occurred_at   timestamptz NOT NULL,
    device_id     uuid,
    payload_text  text,
    latitude      double precision,
    longitude     double precision
);

-- ---------------------------------------------------------------------------------------
-- Data
-- ---------------------------------------------------------------------------------------

-- 120 contacts: g % 3 picks the country (0 GB, 1 US, 2 DE), k = g / 3 picks name and city.
WITH city_ref (cc, ci, city, pc, area) AS (
    VALUES
        (0, 0, 'London',            'SW',  '020 7946 0'),
        (0, 1, 'Oxford',            'OX',  '01632 960'),
        (0, 2, 'Manchester',        'M',   '0161 496 0'),
        (0, 3, 'Leeds',             'LS',  '0113 496 0'),
        (0, 4, 'Bristol',           'BS',  '0117 496 0'),
        (1, 0, 'San Francisco',     '941', '415'),
        (1, 1, 'New York',          '100', '212'),
        (1, 2, 'Austin',            '787', '512'),
        (1, 3, 'Seattle',           '981', '206'),
        (1, 4, 'Chicago',           '606', '312'),
        (2, 0, 'Berlin',            '10',  '30'),
        (2, 1, 'München',           '80',  '89'),
        (2, 2, 'Hamburg',           '20',  '40'),
        (2, 3, 'Köln',              '50',  '221'),
        (2, 4, 'Frankfurt am Main', '60',  '69')
),
s AS (
    SELECT g, g % 3 AS cc, g / 3 AS k
    FROM generate_series(1, 120) AS g
),
p AS (
    SELECT s.g, s.cc, s.k, r.city, r.pc, r.area,
        (CASE s.cc
            WHEN 0 THEN ARRAY['Oliver','Amelia','Harry','Isla','George','Ava','Jack','Emily','Charlotte','Thomas']
            WHEN 1 THEN ARRAY['James','Olivia','Michael','Sophia','Daniel','Emma','Ethan','Mia','Noah','Harper']
            ELSE        ARRAY['Lukas','Anna','Felix','Lena','Jonas','Laura','Paul','Marie','Leon','Hannah']
        END)[1 + s.k % 10] AS fn,
        (CASE s.cc
            WHEN 0 THEN ARRAY['Smith','Jones','Taylor','Brown','Williams','Wilson','Evans','Walker','Hughes','Clarke']
            WHEN 1 THEN ARRAY['Johnson','Miller','Davis','Garcia','Rodriguez','Martinez','Anderson','Lee','Moore','Jackson']
            ELSE        ARRAY['Müller','Schmidt','Schneider','Fischer','Weber','Meyer','Wagner','Becker','Hoffmann','Schulz']
        END)[1 + (s.k + 3 * (s.k / 10)) % 10] AS ln,
        (CASE s.cc
            WHEN 0 THEN ARRAY['Baker Street','High Street','Station Road','Church Lane','Victoria Road','Mill Lane']
            WHEN 1 THEN ARRAY['Market Street','Mission Street','Elm Avenue','Oak Street','Sunset Boulevard','Maple Drive']
            ELSE        ARRAY['Hauptstraße','Bahnhofstraße','Gartenweg','Schillerstraße','Lindenallee','Goethestraße']
        END)[1 + (s.g * 7) % 6] AS street,
        1 + (s.g * 13) % 180 AS house_no
    FROM s
    JOIN city_ref r ON r.cc = s.cc AND r.ci = s.k % 5
),
q AS (
    SELECT p.*,
        lower(replace(replace(replace(replace(fn, 'ü', 'ue'), 'ö', 'oe'), 'ä', 'ae'), 'ß', 'ss')) AS afn,
        lower(replace(replace(replace(replace(ln, 'ü', 'ue'), 'ö', 'oe'), 'ä', 'ae'), 'ß', 'ss')) AS aln,
        timestamptz '2022-03-01 09:00:00+00' + g * interval '3 days 5 hours 17 minutes' AS created
    FROM p
),
r AS (
    SELECT q.*,
        CASE g % 4
            WHEN 0 THEN afn || '.' || aln || '@example.com'
            WHEN 1 THEN left(afn, 1) || aln || g || '@example.org'
            WHEN 2 THEN afn || '_' || aln || '@example.net'
            ELSE        afn || g || '@example.com'
        END AS email,
        CASE cc
            WHEN 0 THEN CASE WHEN g % 2 = 0
                             THEN '+44 7700 900' || lpad(((g * 37) % 1000)::text, 3, '0')
                             ELSE '07700 900' || lpad(((g * 37) % 1000)::text, 3, '0') END
            WHEN 1 THEN '(' || area || ') 555-01' || lpad((g % 100)::text, 2, '0')
            ELSE        '+49 15' || (1 + g % 7) || ' ' || lpad(((g * 7919) % 10000000)::text, 7, '0')
        END AS mobile,
        CASE WHEN g % 6 = 0 THEN NULL
             WHEN cc = 0 AND g % 4 = 3 THEN '+44 ' || substr(area, 2) || lpad(((g * 53) % 1000)::text, 3, '0')
             WHEN cc = 0 THEN area || lpad(((g * 53) % 1000)::text, 3, '0')
             WHEN cc = 1 AND g % 4 = 1 THEN area || '.555.01' || lpad(((g * 7) % 100)::text, 2, '0')
             WHEN cc = 1 THEN '+1 ' || area || '-555-01' || lpad(((g * 7) % 100)::text, 2, '0')
             WHEN g % 4 = 2 THEN '+49 ' || area || ' ' || (2000000 + (g * 4243) % 7000000)
             ELSE '0' || area || ' ' || (2000000 + (g * 4243) % 7000000)
        END AS home,
        CASE WHEN cc = 2 THEN street || ' ' || house_no ELSE house_no || ' ' || street END AS address,
        CASE cc
            WHEN 0 THEN pc || (1 + g % 9) || ' ' || (g % 10)
                        || substr('ABDEFGHJLNPQRSTUWXYZ', 1 + (g * 7) % 20, 1)
                        || substr('ABDEFGHJLNPQRSTUWXYZ', 1 + (g * 11) % 20, 1)
            WHEN 1 THEN pc || lpad(((g * 7) % 100)::text, 2, '0')
            ELSE        pc || lpad((100 + (g * 37) % 900)::text, 3, '0')
        END AS postcode
    FROM q
)
INSERT INTO labelled.contacts (
    id, email, "firstName", "lastName", phone, "homePhone", "dateOfBirth", addr, city, zip,
    country_code, locale, last_login_ip, email_verified, email_opt_in, phone_verified_at,
    address_count, plan_tier, notes, created_at)
SELECT
    g,
    email,
    fn,
    ln,
    mobile,
    home,
    date '1948-01-01' + (g * 2749) % 20000,
    address,
    city,
    postcode,
    (ARRAY['GB','US','DE'])[cc + 1],
    (ARRAY['en-GB','en-US','de-DE'])[cc + 1],
    CASE WHEN g % 10 = 0 THEN NULL
         WHEN g % 4 = 0 THEN '2001:db8:' || to_hex(4096 + g * 31) || '::' || to_hex(g * 97)
         ELSE (ARRAY['203.0.113.','198.51.100.','192.0.2.'])[1 + g % 3] || (1 + (g * 7) % 254)
    END,
    g % 5 <> 0,
    get_byte(decode(md5('opt-in:' || g), 'hex'), 0) < 100,
    CASE WHEN g % 4 = 0 THEN NULL ELSE created + (g % 30) * interval '1 day' END,
    1 + (g % 7 = 0)::int + (g % 11 = 0)::int,
    (ARRAY['free','pro','team'])[1 + get_byte(decode(md5('tier:' || g), 'hex'), 0) % 3],
    CASE g % 5
        WHEN 0 THEN 'Prefers a call on ' || coalesce(home, mobile) || ' after 6pm. Please do not use '
                    || email || ' for marketing.'
        WHEN 1 THEN 'Spoke to ' || fn || ' on ' || mobile || '; asked us to send the renewal quote to '
                    || afn || '.' || aln || '@example.org rather than the work inbox.'
        WHEN 2 THEN 'Met ' || fn || ' at the ' || city || ' meetup. Mobile ' || mobile
                    || ', assistant reachable at office' || g || '@example.net.'
        WHEN 3 THEN 'Moved house in spring; the new address was confirmed by an e-mail from '
                    || email || '.'
        ELSE        'Key account. If anything breaks call ' || mobile || ' first, then the finance lead on '
                    || CASE cc WHEN 0 THEN '020 7946 0' || lpad(((g * 17) % 1000)::text, 3, '0')
                               WHEN 1 THEN '(' || area || ') 555-01' || lpad(((g * 17) % 100)::text, 2, '0')
                               ELSE '+49 ' || area || ' ' || (3000000 + g * 17) END
                    || '.'
    END,
    created
FROM r;

-- 60 identity checks on the 40 US contacts (ids 1, 4, ..., 118); some were re-run.
INSERT INTO labelled.identity_checks (
    check_id, contact_id, fname, lname, dob, ssn, passport_no, mob, status, checked_at)
SELECT
    700000 + g,
    c.id,
    CASE WHEN g % 3 = 0 THEN upper(c."firstName") ELSE c."firstName" END,
    CASE WHEN g % 3 = 0 THEN upper(c."lastName") ELSE c."lastName" END,
    to_char(c."dateOfBirth", 'YYYY-MM-DD'),
    lpad((1 + (c.id * 37) % 665)::text, 3, '0') || '-'
        || lpad((1 + (c.id * 13) % 99)::text, 2, '0') || '-'
        || lpad((1 + (c.id * 7919) % 9999)::text, 4, '0'),
    CASE WHEN c.id % 2 = 0
         THEN chr(65 + (c.id % 26)::int) || lpad(((c.id * 7310341) % 100000000)::text, 8, '0')
         ELSE (5 + c.id % 5)::text || lpad(((c.id * 9301723) % 100000000)::text, 8, '0')
    END,
    CASE WHEN g % 5 = 0 THEN NULL
         ELSE '+1 ' || substr(c.phone, 2, 3) || '-555-01' || lpad(((c.id * 3 + 7) % 100)::text, 2, '0')
    END,
    (ARRAY['passed','passed','passed','failed','pending'])[1 + get_byte(decode(md5('kyc:' || g), 'hex'), 0) % 5],
    c.created_at + interval '2 days' + (g / 41) * interval '200 days'
FROM generate_series(1, 60) AS g
JOIN labelled.contacts c ON c.id = 1 + 3 * ((g - 1) % 40);

-- 100 billing profiles for 100 distinct contacts (7 is coprime to 120).
WITH b AS (
    SELECT g, c.id AS cid, c."firstName" AS fn, c."lastName" AS ln, c.email, c.phone,
        c."homePhone" AS home, c.addr, c.city, c.zip, c.country_code AS cc,
        (ARRAY['453201','401288','455673','510510','542418','222300'])[1 + g % 6]
            || lpad((('x' || substr(md5('pan:' || g), 1, 8))::bit(32)::bigint % 1000000000)::text, 9, '0') AS pfx,
        (ARRAY['WEST','NWBK','BARC','HBUK','LOYD'])[1 + g % 5] AS gb_bank,
        (ARRAY['32142829','23321120','11102712','17113020','21243413'])[1 + g % 5] AS gb_bank_digits,
        lpad(((g::bigint * 104729) % 1000000)::text, 6, '0') AS gb_sort,
        lpad(((g::bigint * 15485863) % 100000000)::text, 8, '0') AS gb_acct,
        (ARRAY['37040044','50010517','10070000','20041133','70150000'])[1 + g % 5] AS de_blz,
        lpad(((g::bigint * 982451653) % 10000000000)::text, 10, '0') AS de_acct
    FROM generate_series(1, 100) AS g
    JOIN labelled.contacts c ON c.id = 1 + (g * 7) % 120
),
l AS (
    SELECT b.*,
        b.pfx || (
            SELECT (10 - sum(CASE WHEN i % 2 = 1
                                  THEN CASE WHEN d * 2 > 9 THEN d * 2 - 9 ELSE d * 2 END
                                  ELSE d END) % 10) % 10
            FROM (SELECT i, substr(b.pfx, i, 1)::int AS d FROM generate_series(1, 15) AS i) AS x
        )::text AS pan,
        'GB' || lpad((98 - ((gb_bank_digits || gb_sort || gb_acct || '161100')::numeric % 97))::text, 2, '0')
            || gb_bank || gb_sort || gb_acct AS gb_iban,
        'DE' || lpad((98 - ((de_blz || de_acct || '131400')::numeric % 97))::text, 2, '0')
            || de_blz || de_acct AS de_iban
    FROM b
),
m AS (
    SELECT l.*,
        CASE cc
            WHEN 'US' THEN NULL
            WHEN 'GB' THEN CASE WHEN g % 11 = 0 THEN 'GB82WEST12345698765432' ELSE gb_iban END
            ELSE CASE WHEN g % 9 = 0 THEN 'FR1420041010050500013M02606'
                      WHEN g % 13 = 0 THEN 'DE89370400440532013000'
                      ELSE de_iban END
        END AS raw_iban
    FROM l
)
INSERT INTO labelled.billing_profiles (
    billing_profile_id, contact_id, billing_name, contact_email, tel, billing_address,
    "billingAddressLine2", billing_city, postal_code, shipping_address, country_code, iban,
    card_number, currency)
SELECT
    g,
    cid,
    CASE g % 4
        WHEN 0 THEN left(fn, 1) || '. ' || ln
        WHEN 1 THEN upper(fn || ' ' || ln)
        ELSE fn || ' ' || ln
    END,
    CASE WHEN g % 3 = 0 THEN 'accounts' || g || '@example.net' ELSE email END,
    CASE WHEN g % 2 = 0 THEN phone ELSE coalesce(home, phone) END,
    addr,
    CASE WHEN g % 4 = 0 THEN NULL
         WHEN cc = 'GB' THEN 'Flat ' || (1 + g % 12)
         WHEN cc = 'US' AND g % 2 = 0 THEN 'Suite ' || (100 * (1 + g % 5))
         WHEN cc = 'US' THEN 'Apt ' || (1 + g % 20) || chr(65 + g % 4)
         WHEN g % 2 = 0 THEN (1 + g % 4) || '. OG'
         ELSE 'Hinterhaus, ' || (1 + g % 4) || '. Etage'
    END,
    city,
    zip,
    CASE WHEN g % 3 = 2 THEN NULL
         WHEN g % 5 = 0 THEN CASE cc WHEN 'DE' THEN 'Am Markt ' || (1 + g % 40)
                                     ELSE (1 + g % 40) || ' Commercial Road' END
                             || ', ' || city || ' ' || zip
         ELSE addr || ', ' || city || ' ' || zip
    END,
    cc,
    CASE WHEN g % 4 = 1 THEN rtrim(regexp_replace(raw_iban, '(.{4})', '\1 ', 'g')) ELSE raw_iban END,
    CASE WHEN g % 10 = 0 THEN (ARRAY['4242 4242 4242 4242','4111-1111-1111-1111',
                                     '5555555555554444','3782 822463 10005'])[1 + (g / 10) % 4]
         WHEN g % 8 = 0 THEN NULL
         WHEN g % 3 = 0 THEN regexp_replace(pan, '(\d{4})(\d{4})(\d{4})(\d{4})', '\1 \2 \3 \4')
         WHEN g % 3 = 1 THEN regexp_replace(pan, '(\d{4})(\d{4})(\d{4})(\d{4})', '\1-\2-\3-\4')
         ELSE pan
    END,
    CASE cc WHEN 'GB' THEN 'GBP' WHEN 'US' THEN 'USD' ELSE 'EUR' END
FROM m;

-- 240 invoices, 2-3 per billing profile.
WITH v AS (
    SELECT g, bp.billing_profile_id AS bpid, bp.currency, bp.contact_email, bp.tel,
        c."firstName" AS fn, c."lastName" AS ln, c.email, c.phone, c."homePhone" AS home,
        get_byte(decode(md5('product:' || g), 'hex'), 0) % 5 AS prod,
        1 + get_byte(decode(md5('qty:' || g), 'hex'), 0) % 4 AS qty,
        timestamptz '2024-01-03 10:00:00+00' + g * interval '1 day 11 hours' AS issued
    FROM generate_series(1, 240) AS g
    JOIN labelled.billing_profiles bp ON bp.billing_profile_id = 1 + (g - 1) % 100
    JOIN labelled.contacts c ON c.id = bp.contact_id
)
INSERT INTO labelled.invoices (
    invoice_id, billing_profile_id, product_name, quantity, amount, currency, status, file_name,
    recipient_email, comment, issued_at)
SELECT
    100000 + g,
    bpid,
    (ARRAY['Starter plan','Pro plan','Team plan','Hardware key','Priority support'])[1 + prod],
    qty,
    (ARRAY[9.00, 29.00, 79.00, 24.50, 199.00])[1 + prod] * qty,
    currency,
    (ARRAY['paid','paid','paid','open','overdue','void'])[1 + get_byte(decode(md5('status:' || g), 'hex'), 0) % 6],
    CASE WHEN g % 12 = 0 THEN NULL
         ELSE 'invoice-' || to_char(issued, 'YYYY') || '-' || lpad(g::text, 3, '0') || '.pdf' END,
    CASE WHEN g % 4 = 0 THEN email ELSE contact_email END,
    CASE g % 6
        WHEN 0 THEN 'Customer asked for a copy to go to their bookkeeper, ap-team' || (g % 7) || '@example.net.'
        WHEN 1 THEN 'Disputed by phone (' || tel || '); agreed to hold collection for 30 days.'
        WHEN 2 THEN fn || ' called from ' || phone || ': PO 4500' || lpad(g::text, 4, '0')
                    || ' must be quoted on the next invoice.'
        WHEN 3 THEN 'Paid late. Two reminders went to ' || contact_email || ' before payment arrived.'
        WHEN 4 THEN 'VAT number corrected at the request of ' || fn || ' ' || ln || ' (' || email || ').'
        ELSE        'Card declined; ' || fn || ' will ring back on ' || coalesce(home, phone)
                    || ' with new card details.'
    END,
    issued
FROM v;

-- 300 web sessions.
WITH w AS (
    SELECT g, 1 + (g * 11) % 120 AS cid, g % 6 AS ua,
        (ARRAY['123','122','124','121'])[1 + g % 4] AS chrome_major,
        (ARRAY['17_4','17_3_1','16_6','17_2'])[1 + g % 4] AS ios
    FROM generate_series(1, 300) AS g
)
INSERT INTO labelled.web_sessions (
    id, contact_id, session_uuid, ip_addr, user_agent, ip_rule_id, referrer_domain, phone_model,
    session_count, is_active, started_at)
SELECT
    g,
    cid,
    overlay(overlay(md5('session:' || g) placing '4' from 13) placing substr('89ab', 1 + g % 4, 1) from 17)::uuid,
    CASE WHEN g % 5 = 0
         THEN '2001:db8:' || to_hex(256 + (g * 13) % 4000) || ':' || to_hex(g * 7) || '::' || to_hex(1 + g % 200)
         ELSE (ARRAY['203.0.113.','198.51.100.','192.0.2.'])[1 + (g / 5) % 3] || (1 + (g * 29) % 254)
    END,
    CASE ua
        WHEN 0 THEN 'Mozilla/5.0 (iPhone; CPU iPhone OS ' || ios || ' like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/'
                    || split_part(ios, '_', 1) || '.' || split_part(ios, '_', 2) || ' Mobile/15E148 Safari/604.1'
        WHEN 1 THEN 'Mozilla/5.0 (iPhone; CPU iPhone OS ' || ios || ' like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/'
                    || chrome_major || '.0.' || (6312 + g % 90) || '.' || (g % 120) || ' Mobile/15E148 Safari/604.1'
        WHEN 2 THEN 'Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/'
                    || chrome_major || '.0.' || (6312 + g % 90) || '.' || (g % 120) || ' Mobile Safari/537.36'
        WHEN 3 THEN 'Mozilla/5.0 (Linux; Android 14; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/'
                    || chrome_major || '.0.' || (6312 + g % 90) || '.' || (g % 120) || ' Mobile Safari/537.36'
        WHEN 4 THEN 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/'
                    || chrome_major || '.0.0.0 Safari/537.36 Edg/' || chrome_major || '.0.' || (2420 + g % 80) || '.' || (g % 90)
        ELSE        'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7; rv:' || (120 + g % 6)
                    || '.0) Gecko/20100101 Firefox/' || (120 + g % 6) || '.0'
    END,
    100 + g % 12,
    CASE WHEN g % 7 = 0 THEN NULL
         ELSE (ARRAY['google.com','bing.com','duckduckgo.com','news.ycombinator.com','t.co','linkedin.com'])
              [1 + get_byte(decode(md5('ref:' || g), 'hex'), 0) % 6]
    END,
    (ARRAY['iPhone 14','iPhone 13','Pixel 7','Galaxy S23', NULL, NULL])[1 + ua],
    1 + get_byte(decode(md5('sessions:' || cid), 'hex'), 0) % 40 + g / 120,
    g > 285,
    timestamptz '2024-03-01 00:00:00+00' + g * interval '2 hours 17 minutes' + (g % 60) * interval '1 minute'
FROM w;

-- 90 support tickets.
WITH t AS (
    SELECT g, c.id AS cid, c."firstName" AS fn, c."lastName" AS ln, c.email, c.phone,
        c."homePhone" AS home, c.addr, c.zip, c.country_code AS cc,
        timestamptz '2024-02-01 08:30:00+00' + g * interval '3 days 7 hours' AS opened
    FROM generate_series(1, 90) AS g
    JOIN labelled.contacts c ON c.id = 1 + (g * 13) % 120
)
INSERT INTO labelled.support_tickets (
    ticket_id, contact_id, status, priority, description, home_tel, internal_note, created_at,
    updated_at)
SELECT
    5000 + g,
    cid,
    (ARRAY['open','closed','closed','pending'])[1 + get_byte(decode(md5('ticket:' || g), 'hex'), 0) % 4],
    1 + get_byte(decode(md5('prio:' || g), 'hex'), 0) % 3,
    CASE g % 6
        WHEN 0 THEN 'Hi, I was charged twice for my Pro plan this month. Please call me on ' || phone
                    || ' or reply to ' || email || '. Thanks, ' || fn
        WHEN 1 THEN 'I cannot log in any more - the reset e-mail never arrives at ' || email
                    || '. Could someone ring me on ' || coalesce(home, phone) || '?'
        WHEN 2 THEN 'Our finance team wants the invoices sent to finance' || g
                    || '@example.org instead of my personal address. Is that possible?'
        WHEN 3 THEN 'Please change my phone number to '
                    || CASE cc WHEN 'GB' THEN '07700 900' || lpad(((g * 41) % 1000)::text, 3, '0')
                               WHEN 'US' THEN '(646) 555-01' || lpad(((g * 41) % 100)::text, 2, '0')
                               ELSE '+49 160 ' || (4000000 + g * 41) END
                    || '. The old one, ' || phone || ', is no longer in use.'
        WHEN 4 THEN 'The hardware key was not delivered to ' || addr || ', ' || zip
                    || '. You can reach me at ' || email || ' or ' || phone || '.'
        ELSE        'Please delete my account and everything you hold about me. Send the confirmation to '
                    || email || '.'
    END,
    CASE WHEN g % 5 = 0 THEN NULL ELSE home END,
    CASE g % 6
        WHEN 0 THEN 'Refund approved; confirmed with ' || fn || ' by phone on ' || phone || '.'
        WHEN 1 THEN 'Escalated to tier 2. Customer also wrote from ' || split_part(email, '@', 1)
                    || '.private@example.net.'
        WHEN 2 THEN 'Tried ' || coalesce(home, phone) || ' twice, no answer. Left voicemail.'
        WHEN 3 THEN 'Identity verified by date of birth and a callback to ' || phone || '.'
        WHEN 4 THEN 'Courier says parcel was left with a neighbour. Customer contact: ' || email || '.'
        ELSE        'Erasure request logged. Acknowledgement sent to ' || email || ' the same day.'
    END,
    opened,
    opened + (1 + g % 9) * interval '1 hour' + (g % 4) * interval '1 day'
FROM t;

-- 270 messages, three per ticket: customer, agent, customer.
WITH mm AS (
    SELECT g, (g - 1) / 90 AS nth, st.ticket_id, st.created_at,
        c."firstName" AS fn, c."lastName" AS ln, c.email, c.phone, c."homePhone" AS home,
        (ARRAY['Priya Patel','Tom Okafor','Sarah Klein','Diego Alvarez'])[1 + g % 4] AS agent
    FROM generate_series(1, 270) AS g
    JOIN labelled.support_tickets st ON st.ticket_id = 5000 + 1 + (g - 1) % 90
    JOIN labelled.contacts c ON c.id = st.contact_id
),
mn AS (
    SELECT mm.*,
        lower(replace(agent, ' ', '.')) || '@support.example.com' AS agent_email
    FROM mm
)
INSERT INTO labelled.support_messages (
    message_id, ticket_id, sender_name, sender_email, body, file_name, sent_at)
SELECT
    900000 + g,
    ticket_id,
    CASE WHEN nth = 1 THEN agent ELSE fn || ' ' || ln END,
    CASE WHEN nth = 1 THEN agent_email ELSE email END,
    CASE
        WHEN nth = 0 AND g % 2 = 0 THEN
            'Hello, following up on my ticket from last week. My number is ' || phone
            || ' if a call is easier. Regards, ' || fn || ' ' || ln
        WHEN nth = 0 THEN
            'Hi, any news? I have attached a screenshot. You can also reach me at ' || email || '.'
        WHEN nth = 1 AND g % 2 = 0 THEN
            'Hi ' || fn || ', thanks for getting in touch. I tried to call you on '
            || coalesce(home, phone) || ' this morning. You can write to me directly at '
            || agent_email || '. Best, ' || split_part(agent, ' ', 1)
        WHEN nth = 1 THEN
            'Hello ' || fn || ', I have updated your account. If anything still looks wrong, call us on '
            || '+44 20 7946 0' || lpad(((g * 3) % 1000)::text, 3, '0') || ' and quote this ticket.'
        WHEN g % 2 = 0 THEN
            'Thanks! Please use ' || email || ' for the paperwork and my mobile ' || phone
            || ' for anything urgent.'
        ELSE
            'Sorted, thank you ' || split_part(agent, ' ', 1) || '. My partner may call from '
            || CASE WHEN phone LIKE '(%' THEN '(917) 555-01' || lpad(((g * 7) % 100)::text, 2, '0')
                    ELSE '+44 7700 900' || lpad(((g * 7) % 1000)::text, 3, '0') END
            || ' - that is fine.'
    END,
    CASE WHEN g % 3 = 0 THEN NULL
         ELSE (ARRAY['screenshot-' || g || '.png', 'error-log.txt', 'receipt.pdf', 'order-confirmation.pdf'])
              [1 + g % 4]
    END,
    created_at + nth * interval '5 hours 20 minutes' + (g % 50) * interval '1 minute'
FROM mn;

-- 400 audit events.
WITH city_ref (city, lat, lon) AS (
    VALUES
        ('London', 51.5072, -0.1276), ('Oxford', 51.7520, -1.2577),
        ('Manchester', 53.4808, -2.2426), ('Leeds', 53.8008, -1.5491),
        ('Bristol', 51.4545, -2.5879), ('San Francisco', 37.7749, -122.4194),
        ('New York', 40.7128, -74.0060), ('Austin', 30.2672, -97.7431),
        ('Seattle', 47.6062, -122.3321), ('Chicago', 41.8781, -87.6298),
        ('Berlin', 52.5200, 13.4050), ('München', 48.1351, 11.5820),
        ('Hamburg', 53.5511, 9.9937), ('Köln', 50.9375, 6.9603),
        ('Frankfurt am Main', 50.1109, 8.6821)
),
e AS (
    SELECT g, c.id AS cid, c.email, c.phone, c."homePhone" AS home, c.country_code AS cc, r.lat, r.lon,
        (ARRAY['login','login','logout','password_reset','profile_updated','invoice_viewed','export_requested'])
            [1 + get_byte(decode(md5('event:' || g), 'hex'), 0) % 7] AS kind
    FROM generate_series(1, 400) AS g
    JOIN labelled.contacts c ON c.id = 1 + (g * 17) % 120
    JOIN city_ref r ON r.city = c.city
)
INSERT INTO labelled.events (
    event_id, contact_id, event_kind, occurred_at, device_id, payload_text, latitude, longitude)
SELECT
    g,
    cid,
    kind,
    timestamptz '2024-01-01 00:00:00+00' + g * interval '21 hours 13 minutes',
    CASE WHEN g % 10 = 0 THEN NULL
         ELSE overlay(overlay(md5('device:' || cid || ':' || (g % 2)) placing '4' from 13)
                      placing substr('89ab', 1 + (cid % 4)::int, 1) from 17)::uuid
    END,
    CASE kind
        WHEN 'login' THEN 'Sign-in from a new device; security alert e-mailed to ' || email
        WHEN 'logout' THEN 'Signed out of all devices after a request from ' || email
        WHEN 'password_reset' THEN 'Password reset link sent to ' || email || ', one-time code sent by SMS to ' || phone
        WHEN 'profile_updated' THEN coalesce('Home phone changed from ' || home || ' to ', 'Home phone added: ')
                                    || CASE cc WHEN 'US' THEN '(212) 555-01' || lpad(((g * 3) % 100)::text, 2, '0')
                                               WHEN 'GB' THEN '020 7946 0' || lpad(((g * 3) % 1000)::text, 3, '0')
                                               ELSE '030 ' || (2400000 + g * 3) END
        WHEN 'invoice_viewed' THEN 'Invoice opened from the link in the e-mail to ' || email
        ELSE 'Data export requested; download link goes to ' || email || ', confirmation code to ' || phone
    END,
    CASE WHEN g % 9 = 0 THEN NULL
         ELSE round((lat + ((g * 37) % 200 - 100) * 0.0004)::numeric, 6)::double precision END,
    CASE WHEN g % 9 = 0 THEN NULL
         ELSE round((lon + ((g * 53) % 200 - 100) * 0.0006)::numeric, 6)::double precision END
FROM e;
