-- The demo shop: six tables that hold personal data in the ways real systems do.
--   customers        identity by email or id
--   orders           one hop: orders.customer_id -> customers.id
--   order_items      two hops: order_items.order_id -> orders.id
--   events           nested JSONB holding personal data, an inet column
--   support_tickets  linked by e-mail only, timestamp without time zone, a text[] column
--   legacy_accounts  VARCHAR dates, epoch integers, uuid
CREATE TABLE customers (
    id               bigint PRIMARY KEY,
    email            text NOT NULL UNIQUE,
    full_name        text NOT NULL,
    phone            text,
    birth_date       date,
    loyalty_points   numeric(12, 2) NOT NULL DEFAULT 0,
    marketing_opt_in boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL
);

CREATE TABLE orders (
    id               bigint PRIMARY KEY,
    customer_id      bigint NOT NULL REFERENCES customers (id),
    placed_at        timestamptz NOT NULL,
    status           text NOT NULL,
    total            numeric(12, 2) NOT NULL,
    shipping_address text
);
CREATE INDEX orders_customer_id ON orders (customer_id);

CREATE TABLE order_items (
    id         bigint PRIMARY KEY,
    order_id   bigint NOT NULL REFERENCES orders (id),
    sku        text NOT NULL,
    quantity   integer NOT NULL,
    unit_price numeric(10, 2) NOT NULL
);
CREATE INDEX order_items_order_id ON order_items (order_id);

CREATE TABLE events (
    id          bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id),
    occurred_at timestamptz NOT NULL,
    kind        text NOT NULL,
    ip          inet,
    payload     jsonb NOT NULL
);
CREATE INDEX events_customer_id ON events (customer_id);

CREATE TABLE support_tickets (
    id              bigint PRIMARY KEY,
    requester_email text NOT NULL,
    subject         text NOT NULL,
    body            text NOT NULL,
    opened_at       timestamp without time zone NOT NULL,
    tags            text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX support_tickets_requester_email ON support_tickets (requester_email);

CREATE TABLE legacy_accounts (
    id               integer PRIMARY KEY,
    email            varchar(255) NOT NULL,
    signup_date      varchar(10),
    last_login_epoch bigint,
    legacy_ref       uuid NOT NULL,
    balance_cents    integer NOT NULL DEFAULT 0
);
CREATE INDEX legacy_accounts_email ON legacy_accounts (email);

-- Alice has rows in every table.
INSERT INTO customers VALUES
    (1, 'alice@example.com', 'Alice Liddell', '+44 20 7946 0958', '1990-05-04', 1250.50, true, '2021-03-14 09:26:53.589793+00'),
    (2, 'bob@example.com', 'Bob Marley', '+1 415 555 0100', NULL, 0, false, '2022-01-01 00:00:00+00'),
    (3, 'carol@example.org', 'Carol Danvers', NULL, '1985-12-31', 99.99, false, '2023-07-04 12:00:00+00');

INSERT INTO orders VALUES
    (101, 1, '2024-01-15 10:00:00+00', 'delivered', 59.97, '1 Rabbit Hole, Oxford OX1 1AA'),
    (102, 1, '2024-03-02 16:45:10+00', 'delivered', 12.50, '1 Rabbit Hole, Oxford OX1 1AA'),
    (103, 1, '2024-06-30 23:59:59.999999+00', 'shipped', 100000.01, NULL),
    (201, 2, '2024-02-01 08:00:00+00', 'cancelled', 5.00, '56 Hope Road, Kingston');

INSERT INTO order_items VALUES
    (1001, 101, 'TEA-EARLGREY', 3, 9.99),
    (1002, 101, 'CUP-PORCELAIN', 2, 15.00),
    (1003, 102, 'HAT-TOP', 1, 12.50),
    (1004, 103, 'CLOCK-POCKET', 1, 99999.99),
    (1005, 103, 'CARD-PLAYING', 1, 0.02),
    (2001, 201, 'GUITAR-PICK', 5, 1.00);

INSERT INTO events VALUES
    (1, 1, '2024-01-15 09:58:00+00', 'checkout', '203.0.113.7',
        '{"cart": {"items": 2}, "contact": {"email": "alice@example.com", "phone": "+44 20 7946 0958"}}'),
    (2, 1, '2024-03-02 16:44:00+00', 'login', '2001:db8::1',
        '{"device": {"os": "macOS"}, "geo": {"city": "Oxford", "country": "GB"}}'),
    (3, 1, '2024-05-05 05:05:05+00', 'profile_update', NULL,
        '{"changes": [{"field": "address", "new": {"street": "1 Rabbit Hole", "postcode": "OX1 1AA"}}]}'),
    (4, 1, '2024-06-30 23:59:00+00', 'payment', '203.0.113.7',
        '{"card": {"last4": "4242", "holder": "Alice Liddell"}, "amount": "100000.01"}'),
    (5, 2, '2024-02-01 07:59:00+00', 'login', '198.51.100.23', '{"device": {"os": "Linux"}}');

INSERT INTO support_tickets VALUES
    (1, 'alice@example.com', 'Where is my clock?', 'Order 103 has not arrived. Call me on +44 20 7946 0958.',
        '2024-07-10 14:30:00', '{shipping,urgent}'),
    (2, 'alice@example.com', 'Delete my marketing data', 'Please stop the newsletter.',
        '2024-08-01 09:00:00', '{gdpr}'),
    (3, 'bob@example.com', 'Refund', 'Refund for order 201 please.', '2024-02-02 10:00:00', '{}');

-- Three date formats from three eras of the legacy system, and one row whose date never
-- existed (it is rejected by the coercion rule and counted in the manifest).
INSERT INTO legacy_accounts VALUES
    (1, 'alice@example.com', '14/03/2009', 1262304000, 'a1b2c3d4-0000-4000-8000-000000000001', 4200),
    (2, 'dave@example.com', '01/01/2001', 978307200, 'a1b2c3d4-0000-4000-8000-000000000002', 0),
    (3, 'alice@example.com', '31/02/2010', 1267401600, 'a1b2c3d4-0000-4000-8000-000000000003', 0),
    (4, 'alice@example.com', '19991231', -86400, 'a1b2c3d4-0000-4000-8000-000000000004', 15),
    (5, 'alice@example.com', '07-04-76', NULL, 'a1b2c3d4-0000-4000-8000-000000000005', 0);

-- Other customers, so that the subject's rows are a needle in a haystack.
INSERT INTO customers (id, email, full_name, phone, created_at)
SELECT i, 'user' || i || '@example.net', 'User ' || i, '+1 555 01' || lpad((i % 100)::text, 2, '0'),
       timestamptz '2020-01-01' + i * interval '1 hour'
FROM generate_series(1001, 3000) AS i;

INSERT INTO orders (id, customer_id, placed_at, status, total)
SELECT 10000 + i, 1001 + (i % 2000), timestamptz '2023-01-01' + i * interval '7 minutes',
       'delivered', (i % 500) + 0.99
FROM generate_series(1, 6000) AS i;

INSERT INTO order_items (id, order_id, sku, quantity, unit_price)
SELECT 100000 + i, 10001 + (i % 6000), 'SKU-' || (i % 97), 1 + i % 3, (i % 50) + 0.5
FROM generate_series(1, 12000) AS i;

INSERT INTO events (id, customer_id, occurred_at, kind, payload)
SELECT 1000 + i, 1001 + (i % 2000), timestamptz '2023-01-01' + i * interval '3 minutes', 'page_view',
       jsonb_build_object('page', '/products/' || (i % 300), 'session', md5(i::text))
FROM generate_series(1, 10000) AS i;
