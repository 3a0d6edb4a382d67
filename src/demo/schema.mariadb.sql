-- The demo shop for MariaDB: the same six tables and the same rows as schema.sql, in the
-- types a MariaDB system would hold them in.
--   customers        identity by email or id; TIMESTAMP (UTC), DECIMAL, BOOLEAN
--   orders           one hop: orders.customer_id -> customers.id
--   order_items      two hops: order_items.order_id -> orders.id
--   events           JSON (in MariaDB a LONGTEXT checked by json_valid) holding personal
--                    data, an IP address as text
--   support_tickets  linked by e-mail only, DATETIME (no zone), tags as a JSON array
--   legacy_accounts  VARCHAR dates, epoch integers, a uuid as CHAR(36)
-- The session that loads it runs with time_zone = '+00:00'.
CREATE TABLE customers (
    id               BIGINT PRIMARY KEY,
    email            VARCHAR(255) NOT NULL UNIQUE,
    full_name        VARCHAR(255) NOT NULL,
    phone            VARCHAR(64),
    birth_date       DATE,
    loyalty_points   DECIMAL(12, 2) NOT NULL DEFAULT 0,
    marketing_opt_in BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       TIMESTAMP(6) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE orders (
    id               BIGINT PRIMARY KEY,
    customer_id      BIGINT NOT NULL,
    placed_at        TIMESTAMP(6) NOT NULL,
    status           VARCHAR(32) NOT NULL,
    total            DECIMAL(12, 2) NOT NULL,
    shipping_address TEXT,
    CONSTRAINT orders_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES customers (id),
    INDEX orders_customer_id (customer_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE order_items (
    id         BIGINT PRIMARY KEY,
    order_id   BIGINT NOT NULL,
    sku        VARCHAR(64) NOT NULL,
    quantity   INT NOT NULL,
    unit_price DECIMAL(10, 2) NOT NULL,
    CONSTRAINT order_items_order_id_fkey FOREIGN KEY (order_id) REFERENCES orders (id),
    INDEX order_items_order_id (order_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE events (
    id          BIGINT PRIMARY KEY,
    customer_id BIGINT NOT NULL,
    occurred_at TIMESTAMP(6) NOT NULL,
    kind        VARCHAR(32) NOT NULL,
    ip          VARCHAR(45),
    payload     JSON NOT NULL,
    CONSTRAINT events_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES customers (id),
    INDEX events_customer_id (customer_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE support_tickets (
    id              BIGINT PRIMARY KEY,
    requester_email VARCHAR(255) NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    opened_at       DATETIME NOT NULL,
    tags            JSON NOT NULL,
    INDEX support_tickets_requester_email (requester_email)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE legacy_accounts (
    id               INT PRIMARY KEY,
    email            VARCHAR(255) NOT NULL,
    signup_date      VARCHAR(10),
    last_login_epoch BIGINT,
    legacy_ref       CHAR(36) NOT NULL,
    balance_cents    INT NOT NULL DEFAULT 0,
    INDEX legacy_accounts_email (email)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Alice has rows in every table.
INSERT INTO customers VALUES
    (1, 'alice@example.com', 'Alice Liddell', '+44 20 7946 0958', '1990-05-04', 1250.50, TRUE, '2021-03-14 09:26:53.589793'),
    (2, 'bob@example.com', 'Bob Marley', '+1 415 555 0100', NULL, 0, FALSE, '2022-01-01 00:00:00'),
    (3, 'carol@example.org', 'Carol Danvers', NULL, '1985-12-31', 99.99, FALSE, '2023-07-04 12:00:00');

INSERT INTO orders VALUES
    (101, 1, '2024-01-15 10:00:00', 'delivered', 59.97, '1 Rabbit Hole, Oxford OX1 1AA'),
    (102, 1, '2024-03-02 16:45:10', 'delivered', 12.50, '1 Rabbit Hole, Oxford OX1 1AA'),
    (103, 1, '2024-06-30 23:59:59.999999', 'shipped', 100000.01, NULL),
    (201, 2, '2024-02-01 08:00:00', 'cancelled', 5.00, '56 Hope Road, Kingston');

INSERT INTO order_items VALUES
    (1001, 101, 'TEA-EARLGREY', 3, 9.99),
    (1002, 101, 'CUP-PORCELAIN', 2, 15.00),
    (1003, 102, 'HAT-TOP', 1, 12.50),
    (1004, 103, 'CLOCK-POCKET', 1, 99999.99),
    (1005, 103, 'CARD-PLAYING', 1, 0.02),
    (2001, 201, 'GUITAR-PICK', 5, 1.00);

INSERT INTO events VALUES
    (1, 1, '2024-01-15 09:58:00', 'checkout', '203.0.113.7',
        '{"cart": {"items": 2}, "contact": {"email": "alice@example.com", "phone": "+44 20 7946 0958"}}'),
    (2, 1, '2024-03-02 16:44:00', 'login', '2001:db8::1',
        '{"device": {"os": "macOS"}, "geo": {"city": "Oxford", "country": "GB"}}'),
    (3, 1, '2024-05-05 05:05:05', 'profile_update', NULL,
        '{"changes": [{"field": "address", "new": {"street": "1 Rabbit Hole", "postcode": "OX1 1AA"}}]}'),
    (4, 1, '2024-06-30 23:59:00', 'payment', '203.0.113.7',
        '{"card": {"last4": "4242", "holder": "Alice Liddell"}, "amount": "100000.01"}'),
    (5, 2, '2024-02-01 07:59:00', 'login', '198.51.100.23', '{"device": {"os": "Linux"}}');

INSERT INTO support_tickets VALUES
    (1, 'alice@example.com', 'Where is my clock?', 'Order 103 has not arrived. Call me on +44 20 7946 0958.',
        '2024-07-10 14:30:00', '["shipping", "urgent"]'),
    (2, 'alice@example.com', 'Delete my marketing data', 'Please stop the newsletter.',
        '2024-08-01 09:00:00', '["gdpr"]'),
    (3, 'bob@example.com', 'Refund', 'Refund for order 201 please.', '2024-02-02 10:00:00', '[]');

-- Three date formats from three eras of the legacy system, and one row whose date never
-- existed (it is rejected by the coercion rule and counted in the manifest).
INSERT INTO legacy_accounts VALUES
    (1, 'alice@example.com', '14/03/2009', 1262304000, 'a1b2c3d4-0000-4000-8000-000000000001', 4200),
    (2, 'dave@example.com', '01/01/2001', 978307200, 'a1b2c3d4-0000-4000-8000-000000000002', 0),
    (3, 'alice@example.com', '31/02/2010', 1267401600, 'a1b2c3d4-0000-4000-8000-000000000003', 0),
    (4, 'alice@example.com', '19991231', -86400, 'a1b2c3d4-0000-4000-8000-000000000004', 15),
    (5, 'alice@example.com', '07-04-76', NULL, 'a1b2c3d4-0000-4000-8000-000000000005', 0);

-- Other customers, so that the subject's rows are a needle in a haystack (MariaDB's sequence
-- tables stand in for generate_series).
INSERT INTO customers (id, email, full_name, phone, created_at)
SELECT seq, CONCAT('user', seq, '@example.net'), CONCAT('User ', seq),
       CONCAT('+1 555 01', LPAD(seq % 100, 2, '0')),
       TIMESTAMP '2020-01-01 00:00:00' + INTERVAL seq HOUR
FROM seq_1001_to_3000;

INSERT INTO orders (id, customer_id, placed_at, status, total)
SELECT 10000 + seq, 1001 + (seq % 2000), TIMESTAMP '2023-01-01 00:00:00' + INTERVAL (seq * 7) MINUTE,
       'delivered', (seq % 500) + 0.99
FROM seq_1_to_6000;

INSERT INTO order_items (id, order_id, sku, quantity, unit_price)
SELECT 100000 + seq, 10001 + (seq % 6000), CONCAT('SKU-', seq % 97), 1 + seq % 3, (seq % 50) + 0.5
FROM seq_1_to_12000;

INSERT INTO events (id, customer_id, occurred_at, kind, payload)
SELECT 1000 + seq, 1001 + (seq % 2000), TIMESTAMP '2023-01-01 00:00:00' + INTERVAL (seq * 3) MINUTE,
       'page_view', JSON_OBJECT('page', CONCAT('/products/', seq % 300), 'session', MD5(seq))
FROM seq_1_to_10000;
