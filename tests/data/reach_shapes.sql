-- Shapes of real schemas that an identity graph must not follow blindly, each small enough
-- to write every subject's expected rows out by hand (tests/reach/):
--   a rental shop: a store with a manager and customers, clerks on every rental and payment,
--     a payment table partitioned by month with its foreign keys on the partitions, and
--     addresses that customers and staff point at (one shared by a household);
--   a music shop: customers with a support rep, employees who report to each other
--     (a self-reference), invoices and their lines.
CREATE SCHEMA rs;

CREATE TABLE rs.address (
    address_id  integer PRIMARY KEY,
    address     text NOT NULL,
    address2    text,
    postal_code text,
    phone       text
);

CREATE TABLE rs.staff (
    staff_id   integer PRIMARY KEY,
    first_name text NOT NULL,
    email      text NOT NULL UNIQUE,
    address_id integer NOT NULL REFERENCES rs.address (address_id),
    store_id   integer NOT NULL,
    picture    bytea
);

CREATE TABLE rs.store (
    store_id         integer PRIMARY KEY,
    manager_staff_id integer NOT NULL REFERENCES rs.staff (staff_id),
    address_id       integer NOT NULL REFERENCES rs.address (address_id)
);
ALTER TABLE rs.staff ADD FOREIGN KEY (store_id) REFERENCES rs.store (store_id)
    DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE rs.customer (
    customer_id integer PRIMARY KEY,
    store_id    integer NOT NULL REFERENCES rs.store (store_id),
    first_name  text NOT NULL,
    email       text NOT NULL UNIQUE,
    address_id  integer NOT NULL REFERENCES rs.address (address_id)
);

CREATE TABLE rs.inventory (
    inventory_id integer PRIMARY KEY,
    film         text NOT NULL,
    store_id     integer NOT NULL REFERENCES rs.store (store_id)
);

CREATE TABLE rs.rental (
    rental_id    integer PRIMARY KEY,
    inventory_id integer NOT NULL REFERENCES rs.inventory (inventory_id),
    customer_id  integer NOT NULL REFERENCES rs.customer (customer_id),
    staff_id     integer NOT NULL REFERENCES rs.staff (staff_id)
);
CREATE INDEX ON rs.rental (customer_id);
CREATE INDEX ON rs.rental (staff_id);

-- Partitioned by month; the foreign keys are declared on the partitions, as older schemas
-- (and PostgreSQL before 11) declare them.
CREATE TABLE rs.payment (
    payment_id  integer NOT NULL,
    customer_id integer NOT NULL,
    staff_id    integer NOT NULL,
    rental_id   integer NOT NULL,
    amount      numeric(5,2) NOT NULL,
    paid_at     date NOT NULL
) PARTITION BY RANGE (paid_at);
CREATE TABLE rs.payment_2024_01 PARTITION OF rs.payment
    FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE rs.payment_2024_02 PARTITION OF rs.payment
    FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
ALTER TABLE rs.payment_2024_01
    ADD FOREIGN KEY (customer_id) REFERENCES rs.customer (customer_id),
    ADD FOREIGN KEY (staff_id) REFERENCES rs.staff (staff_id),
    ADD FOREIGN KEY (rental_id) REFERENCES rs.rental (rental_id);
ALTER TABLE rs.payment_2024_02
    ADD FOREIGN KEY (customer_id) REFERENCES rs.customer (customer_id),
    ADD FOREIGN KEY (staff_id) REFERENCES rs.staff (staff_id),
    ADD FOREIGN KEY (rental_id) REFERENCES rs.rental (rental_id);
CREATE INDEX ON rs.payment (customer_id);
CREATE INDEX ON rs.payment (rental_id);

CREATE TABLE rs.employee (
    employee_id integer PRIMARY KEY,
    last_name   text NOT NULL,
    title       text,
    reports_to  integer REFERENCES rs.employee (employee_id),
    email       text NOT NULL UNIQUE
);

CREATE TABLE rs.client (
    client_id      integer PRIMARY KEY,
    last_name      text NOT NULL,
    email          text NOT NULL UNIQUE,
    phone          text,
    support_rep_id integer REFERENCES rs.employee (employee_id)
);

CREATE TABLE rs.invoice (
    invoice_id integer PRIMARY KEY,
    client_id  integer NOT NULL REFERENCES rs.client (client_id),
    total      numeric(8,2) NOT NULL
);
CREATE INDEX ON rs.invoice (client_id);

CREATE TABLE rs.invoice_line (
    invoice_line_id integer PRIMARY KEY,
    invoice_id      integer NOT NULL REFERENCES rs.invoice (invoice_id),
    track           text NOT NULL
);
CREATE INDEX ON rs.invoice_line (invoice_id);

BEGIN;
INSERT INTO rs.address VALUES
    (1, '47 Mysakowski Lane', 'Flat 2', '54321', '(503) 555-0101'),  -- alice and bob's home
    (2, '1913 Hanoi Way', NULL, '35200', '(503) 555-0102'),          -- carol
    (3, '28 MySQL Boulevard', NULL, '11111', '(503) 555-0103'),      -- sam, a manager
    (4, '1 Store Street', NULL, '22222', '(503) 555-0104'),          -- the store
    (5, '9 Clerk Close', NULL, '33333', '(503) 555-0105');           -- mia, a clerk
INSERT INTO rs.staff VALUES
    (1, 'Sam', 'sam@shop.test', 3, 1, '\x89504e47'),
    (2, 'Mia', 'mia@shop.test', 5, 1, NULL);
INSERT INTO rs.store VALUES (1, 1, 4);
COMMIT;
INSERT INTO rs.customer VALUES
    (1, 1, 'Alice', 'alice@shop.test', 1),
    (2, 1, 'Bob', 'bob@shop.test', 1),
    (3, 1, 'Carol', 'carol@shop.test', 2);
INSERT INTO rs.inventory VALUES (1, 'Alien', 1), (2, 'Brazil', 1), (3, 'Cube', 1);
INSERT INTO rs.rental VALUES
    (1, 1, 1, 2),
    (2, 2, 1, 1),
    (3, 3, 2, 1),
    (4, 1, 3, 1);
INSERT INTO rs.payment VALUES
    (1, 1, 2, 1, 2.99, '2024-01-05'),
    (2, 1, 1, 2, 4.99, '2024-02-07'),
    (3, 2, 1, 3, 0.99, '2024-01-09'),
    (4, 3, 2, 4, 3.99, '2024-02-11');
INSERT INTO rs.employee VALUES
    (1, 'Adams', 'General Manager', NULL, 'andrew@music.test'),
    (2, 'Peacock', 'Sales Manager', 1, 'jane@music.test'),
    (3, 'Johnson', 'Sales Support Agent', 2, 'steve@music.test');
INSERT INTO rs.client VALUES
    (1, 'Goncalves', 'luis@client.test', '+55 12 3923-5555', 3),
    (2, 'Koehler', 'leonie@client.test', '+49 0711 2842222', 3),
    (3, 'Tremblay', 'francois@client.test', '+1 514 721-4711', 2);
INSERT INTO rs.invoice VALUES (1, 1, 3.98), (2, 1, 3.96), (3, 2, 5.94);
INSERT INTO rs.invoice_line VALUES
    (1, 1, 'Balls to the Wall'),
    (2, 1, 'Restless and Wild'),
    (3, 2, 'Put The Finger On You'),
    (4, 3, 'Inject The Venom');
ANALYZE;
