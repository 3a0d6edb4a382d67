-- The shapes of reach_shapes.sql in MariaDB's SQL, with the same rows: the payment table is
-- one table (InnoDB keeps no foreign keys on partitioned tables), and the store and its
-- manager point at each other with the checks off while they are loaded.
SET FOREIGN_KEY_CHECKS = 0;

CREATE TABLE address (
    address_id  INT PRIMARY KEY,
    address     VARCHAR(100) NOT NULL,
    address2    VARCHAR(100),
    postal_code VARCHAR(10),
    phone       VARCHAR(20)
);

CREATE TABLE staff (
    staff_id   INT PRIMARY KEY,
    first_name VARCHAR(45) NOT NULL,
    email      VARCHAR(255) NOT NULL UNIQUE,
    address_id INT NOT NULL,
    store_id   INT NOT NULL,
    picture    BLOB,
    FOREIGN KEY (address_id) REFERENCES address (address_id)
);

CREATE TABLE store (
    store_id         INT PRIMARY KEY,
    manager_staff_id INT NOT NULL,
    address_id       INT NOT NULL,
    FOREIGN KEY (manager_staff_id) REFERENCES staff (staff_id),
    FOREIGN KEY (address_id) REFERENCES address (address_id)
);
ALTER TABLE staff ADD FOREIGN KEY (store_id) REFERENCES store (store_id);

CREATE TABLE customer (
    customer_id INT PRIMARY KEY,
    store_id    INT NOT NULL,
    first_name  VARCHAR(45) NOT NULL,
    email       VARCHAR(255) NOT NULL UNIQUE,
    address_id  INT NOT NULL,
    FOREIGN KEY (store_id) REFERENCES store (store_id),
    FOREIGN KEY (address_id) REFERENCES address (address_id)
);

CREATE TABLE inventory (
    inventory_id INT PRIMARY KEY,
    film         VARCHAR(100) NOT NULL,
    store_id     INT NOT NULL,
    FOREIGN KEY (store_id) REFERENCES store (store_id)
);

CREATE TABLE rental (
    rental_id    INT PRIMARY KEY,
    inventory_id INT NOT NULL,
    customer_id  INT NOT NULL,
    staff_id     INT NOT NULL,
    FOREIGN KEY (inventory_id) REFERENCES inventory (inventory_id),
    FOREIGN KEY (customer_id) REFERENCES customer (customer_id),
    FOREIGN KEY (staff_id) REFERENCES staff (staff_id)
);

CREATE TABLE payment (
    payment_id  INT PRIMARY KEY,
    customer_id INT NOT NULL,
    staff_id    INT NOT NULL,
    rental_id   INT NOT NULL,
    amount      DECIMAL(5,2) NOT NULL,
    paid_at     DATE NOT NULL,
    FOREIGN KEY (customer_id) REFERENCES customer (customer_id),
    FOREIGN KEY (staff_id) REFERENCES staff (staff_id),
    FOREIGN KEY (rental_id) REFERENCES rental (rental_id)
);

CREATE TABLE employee (
    employee_id INT PRIMARY KEY,
    last_name   VARCHAR(45) NOT NULL,
    title       VARCHAR(45),
    reports_to  INT,
    email       VARCHAR(255) NOT NULL UNIQUE,
    FOREIGN KEY (reports_to) REFERENCES employee (employee_id)
);

CREATE TABLE client (
    client_id      INT PRIMARY KEY,
    last_name      VARCHAR(45) NOT NULL,
    email          VARCHAR(255) NOT NULL UNIQUE,
    phone          VARCHAR(30),
    support_rep_id INT,
    FOREIGN KEY (support_rep_id) REFERENCES employee (employee_id)
);

CREATE TABLE invoice (
    invoice_id INT PRIMARY KEY,
    client_id  INT NOT NULL,
    total      DECIMAL(8,2) NOT NULL,
    FOREIGN KEY (client_id) REFERENCES client (client_id)
);

CREATE TABLE invoice_line (
    invoice_line_id INT PRIMARY KEY,
    invoice_id      INT NOT NULL,
    track           VARCHAR(100) NOT NULL,
    FOREIGN KEY (invoice_id) REFERENCES invoice (invoice_id)
);

INSERT INTO address VALUES
    (1, '47 Mysakowski Lane', 'Flat 2', '54321', '(503) 555-0101'),
    (2, '1913 Hanoi Way', NULL, '35200', '(503) 555-0102'),
    (3, '28 MySQL Boulevard', NULL, '11111', '(503) 555-0103'),
    (4, '1 Store Street', NULL, '22222', '(503) 555-0104'),
    (5, '9 Clerk Close', NULL, '33333', '(503) 555-0105');
INSERT INTO staff VALUES
    (1, 'Sam', 'sam@shop.test', 3, 1, X'89504E47'),
    (2, 'Mia', 'mia@shop.test', 5, 1, NULL);
INSERT INTO store VALUES (1, 1, 4);
INSERT INTO customer VALUES
    (1, 1, 'Alice', 'alice@shop.test', 1),
    (2, 1, 'Bob', 'bob@shop.test', 1),
    (3, 1, 'Carol', 'carol@shop.test', 2);
INSERT INTO inventory VALUES (1, 'Alien', 1), (2, 'Brazil', 1), (3, 'Cube', 1);
INSERT INTO rental VALUES (1, 1, 1, 2), (2, 2, 1, 1), (3, 3, 2, 1), (4, 1, 3, 1);
INSERT INTO payment VALUES
    (1, 1, 2, 1, 2.99, '2024-01-05'),
    (2, 1, 1, 2, 4.99, '2024-02-07'),
    (3, 2, 1, 3, 0.99, '2024-01-09'),
    (4, 3, 2, 4, 3.99, '2024-02-11');
INSERT INTO employee VALUES
    (1, 'Adams', 'General Manager', NULL, 'andrew@music.test'),
    (2, 'Peacock', 'Sales Manager', 1, 'jane@music.test'),
    (3, 'Johnson', 'Sales Support Agent', 2, 'steve@music.test');
INSERT INTO client VALUES
    (1, 'Goncalves', 'luis@client.test', '+55 12 3923-5555', 3),
    (2, 'Koehler', 'leonie@client.test', '+49 0711 2842222', 3),
    (3, 'Tremblay', 'francois@client.test', '+1 514 721-4711', 2);
INSERT INTO invoice VALUES (1, 1, 3.98), (2, 1, 3.96), (3, 2, 5.94);
INSERT INTO invoice_line VALUES
    (1, 1, 'Balls to the Wall'),
    (2, 1, 'Restless and Wild'),
    (3, 2, 'Put The Finger On You'),
    (4, 3, 'Inject The Venom');
SET FOREIGN_KEY_CHECKS = 1;

-- A PascalCase catalog, as MariaDB's sample databases write one.
CREATE TABLE Member (
    MemberId INT PRIMARY KEY,
    Email    VARCHAR(255) NOT NULL UNIQUE,
    FullName VARCHAR(100) NOT NULL
);
INSERT INTO Member VALUES (1, 'ann@member.test', 'Ann Lee'), (2, 'ben@member.test', 'Ben Ode'),
    (3, 'cy@member.test', 'Cy Twombly');
